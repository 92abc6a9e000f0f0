{#- abort: the canary ends, production all on the active stack again (the routes map's
    <app>/canary deleted); the release keeps internal and preview traffic.
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('abort') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}

{{ steps.routes() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
