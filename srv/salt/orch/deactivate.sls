{#- deactivate: any state -> deactivated. Traffic leaves the stack first (an active stack
    needs force: production then answers 503), its servers drain, its containers stop
    gracefully and go. Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'deactivate' %}
{%- set args = pillar.get('pigeon', {}) %}
{%- set app = args.get('app') %}
{#- the plan: checked against the registry and the state machine by the stacks runner #}
{%- set plan = salt['saltutil.runner']('stacks.plan', app=app, action=action, version=args.get('version'),
      force=args.get('force', False), definition=pillar.get('stacks', {}).get(app)) %}
{%- set lb, cfg, source = plan.get('loadbal', {}), plan.get('config', {}), args.get('source', 'cli') %}
{%- import 'orch/steps.jinja' as steps %}
{%- if plan.get('error') %}
{{ steps.refused(action, plan) }}
{%- else %}
{{ steps.lock(action, app, plan, args) }}
{%-   set done = ['salt: pigeon-deactivate-lock-runner'] %}
{%-   if not plan.noop %}
{{ steps.routes(action, lb, plan, 'salt: pigeon-deactivate-lock-runner') }}
{{ steps.remove(action, app, lb, cfg, plan.stop, 'salt: pigeon-deactivate-routes-function') }}
{%-     set done = done + ['salt: pigeon-deactivate-routes-function'] %}
{%-   else %}
{#- not in the registry: remove whatever an interrupted action left of it #}
{{ steps.remove(action, app, lb, cfg, plan.stop, 'salt: pigeon-deactivate-lock-runner') }}
{%-   endif %}
{%-   for stop in plan.stop %}{% do done.append('salt: pigeon-deactivate-remove-' ~ stop.version ~ '-state') %}{% endfor %}
{{ steps.commit(action, app, plan, source, done) }}
{%- endif %}
