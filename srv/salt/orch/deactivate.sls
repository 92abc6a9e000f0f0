{#- deactivate: any state -> deactivated. Traffic leaves the stack first (an active stack
    needs force: production then answers 503), its servers drain, its containers stop
    gracefully and go. Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:expect_revision, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'deactivate' %}
{%- set args = pillar.get('pigeon', {}) %}
{%- set app = args.get('app') %}
{#- the plan: checked against the registry and the state machine by the stacks runner,
    which takes the app's deploy lock (see steps.jinja) #}
{%- set plan = salt['pigeon_runner.call']('stacks.plan', app=app, action=action, version=args.get('version'),
      force=args.get('force', False), wait=args.get('wait', 0), source=args.get('source', 'cli'),
      expect_revision=args.get('expect_revision'),
      user=opts.get('user', 'unknown'), definition=pillar.get('stacks', {}).get(app)) %}
{%- set lb, cfg, source = plan.get('loadbal', {}), plan.get('config', {}), args.get('source', 'cli') %}
{%- import 'orch/steps.jinja' as steps %}
{%- if plan.get('error') %}
{{ steps.refused(action, plan) }}
{%- else %}
{%-   if not plan.noop %}

# traffic leaves the stack, its servers drain, its containers stop gracefully and go
{{ steps.routes(action, lb, plan) }}
{{ steps.remove(action, app, lb, cfg, plan.stop, 'pigeon-deactivate-routes-function') }}
{%-     set done = ['pigeon-deactivate-routes-function'] %}
{%-   else %}

# not in the registry: remove whatever an interrupted action left of it
{{ steps.remove(action, app, lb, cfg, plan.stop, None) }}
{%-     set done = [] %}
{%-   endif %}
{%-   for stop in plan.stop %}{% do done.append('pigeon-deactivate-remove-' ~ stop.version ~ '-state') %}{% endfor %}
{{ steps.commit(action, app, plan, source, done) }}
{%- endif %}
