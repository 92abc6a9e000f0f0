{#- rollback: inactive -> active, active -> inactive, switched at runtime like activate.
    Refuses when the inactive stack is not fully UP. Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:expect_revision, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'rollback' %}
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

# the switch back: production to the inactive stack's slot, only if all its servers are UP
{{ steps.routes(action, lb, plan, gate=plan.gate) }}
{{ steps.commit(action, app, plan, source, ['pigeon-rollback-routes-function']) }}
{%- endif %}
