{#- canary: a share of production to the release stack, the rest to the active one, at runtime
    (the routes map's <app>/canary; a cookie keeps each client on its side). A share above 0
    is refused unless every server of the release is UP; 0 returns production to the active one.
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('canary') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- elif plan.get('gate') %}

# the share, only if all the release's servers are UP
{{ steps.routes(gate={plan.gate.backend: plan.gate.expected_up}) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}

# no share: production all on the active stack
{{ steps.routes() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
