{#- rollback: inactive -> active, active -> inactive, switched at runtime like activate.
    Refuses when the inactive stack is not fully UP.
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('rollback') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}

# the switch back: production to the inactive stack's slot, only if all its servers are UP
{{ steps.routes(gate={plan.gate.backend: plan.gate.expected_up}) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
