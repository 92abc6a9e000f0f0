{#- maintenance on or off: production answers 503 with the message while the routes map's
    <app>/maintenance is set; internal and preview traffic still reach the stacks.
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('maintenance') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}

{{ steps.routes() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
