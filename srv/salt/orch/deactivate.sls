{#- deactivate: any state -> deactivated. Traffic leaves the stack first (an active stack
    needs force: production then answers 503), its servers drain, its containers stop
    gracefully and go. A version the registry does not know: whatever an interrupted action
    left of it is removed (no routes step then).
    Pillar read: pigeon_plan (made by the deploy runner under the app's lock; see steps.jinja). #}
{%- import 'orch/steps.jinja' as steps with context %}
{%- set plan = steps.plan %}
{%- if not plan %}
{{ steps.without_plan('deactivate') }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- else %}
{%-   if 'routes' in steps.ids %}

# traffic leaves the stack
{{ steps.routes() }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%-   endif %}

# its servers drain, its containers stop gracefully and go
{{ steps.remove(['routes']) }}  {#- a macro of steps.jinja: every value it renders goes through tojson #}
{%- endif %}
