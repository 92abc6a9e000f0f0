{#- activate: release -> active, the old active -> inactive, the old inactive -> deactivated.
    Refuses a release that is not fully UP; switches production at runtime (HAProxy map).
    Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:expect_revision, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'activate' %}
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
{%-   set done = [] %}
{%-   if not plan.noop %}

# the switch: production (and internal) to the release's slot, at runtime, only if every
# server of that slot is UP; then the old inactive stack goes
{{ steps.routes(action, lb, plan, gate=plan.gate) }}
{{ steps.remove(action, app, lb, cfg, plan.stop, 'pigeon-activate-routes-function') }}
{%-     set done = ['pigeon-activate-routes-function'] %}
{%-     for stop in plan.stop %}{% do done.append('pigeon-activate-remove-' ~ stop.version ~ '-state') %}{% endfor %}
{%-   endif %}
{{ steps.commit(action, app, plan, source, done) }}
{%- endif %}
