{#- activate: release -> active, the old active -> inactive, the old inactive -> deactivated.
    Refuses a release that is not fully UP; switches production at runtime (HAProxy map).
    Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'activate' %}
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
{%-   set done = ['salt: pigeon-activate-lock-runner'] %}
{%-   if not plan.noop %}
{{ steps.gate(action, lb, plan.gate.backend, plan.gate.expected_up, 'salt: pigeon-activate-lock-runner') }}
{{ steps.routes(action, lb, plan, 'salt: pigeon-activate-gate-function') }}
{{ steps.remove(action, app, lb, cfg, plan.stop, 'salt: pigeon-activate-routes-function') }}
{%-     set done = done + ['salt: pigeon-activate-gate-function', 'salt: pigeon-activate-routes-function'] %}
{%-     for stop in plan.stop %}{% do done.append('salt: pigeon-activate-remove-' ~ stop.version ~ '-state') %}{% endfor %}
{%-   endif %}
{{ steps.commit(action, app, plan, source, done) }}
{%- endif %}
