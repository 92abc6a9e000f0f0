{#- activate: release -> active, the old active -> inactive, the old inactive -> deactivated.
    Refuses a release that is not fully UP; switches production at runtime (HAProxy map).
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('activate') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}

# the switch: production (and internal) to the release's slot, at runtime, only if every
# server of that slot is UP; then the old inactive stack drains and goes
{{ steps.routes(gate={plan.gate.backend: plan.gate.expected_up}) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{{ steps.remove(['routes']) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
