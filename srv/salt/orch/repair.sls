{#- repair: no transition. Brings what runs back to what the registry says: HAProxy on the load
    balancer, every stack's containers (stopped ones started, missing ones created, those of
    versions the registry does not know removed), healthy; then the registry's routes set again
    once HAProxy has every server of every stack UP. The registry does not change.
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('repair') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}

# HAProxy up on the load balancer (its container back if it was lost), beside the containers
{{ steps.loadbal() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}

# each stack's containers as the registry has them, one step per stack; each ends when docker
# says every one of them is healthy (its HEALTHCHECK)
{{ steps.repair() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}

# the registry's routes, set again after every other step, once HAProxy has every server of
# every stack UP
{{ steps.routes(plan.steps | map(attribute='step') | reject('equalto', 'routes') | list, gate=plan.gates, wait=steps.lb.healthcheck_timeout) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
