{#- release: deactivated -> release. Starts the stack's containers in a free slot, waits until
    HAProxy has every one UP, then routes internal/preview traffic to it. Production is untouched.
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('release') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}
{%-   if plan.converge_loadbal %}

# HAProxy up to date on the load balancer: a new app (or a changed loadbal: pillar) gets its
# slots, with a reload that loses nothing. Skipped when the registry has seen this loadbal: already.
{{ steps.loadbal() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%-   endif %}

# the app's config formula (its files and image for this version), then the stack's containers,
# all started at once, after what interrupted actions left is removed; the step ends when docker
# says every one is healthy (its HEALTHCHECK)
{{ steps.containers(plan.start) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}

# preview (internal) traffic to the new slot as soon as HAProxy has every one of its servers
# UP with its check passed (the HAProxy health gate, waited for in the same call)
{{ steps.routes(['containers', 'loadbal'], gate={plan.start.backend: plan.start.expected_up}, wait=steps.lb.healthcheck_timeout) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%-   if 'cleanup' in steps.ids %}

# a release that failed leaves nothing behind (unless --keep-failed)
{{ steps.cleanup(plan.start) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%-   endif %}
{%- endif %}
