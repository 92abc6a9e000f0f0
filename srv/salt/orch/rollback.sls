{#- rollback: inactive -> active, active -> inactive, switched at runtime like activate.
    Refuses when the inactive stack is not fully UP. Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'rollback' %}
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
{{ steps.gate(action, lb, plan.gate.backend, plan.gate.expected_up, 'salt: pigeon-rollback-lock-runner') }}
{{ steps.routes(action, lb, plan, 'salt: pigeon-rollback-gate-function') }}
{{ steps.commit(action, app, plan, source, ['salt: pigeon-rollback-lock-runner', 'salt: pigeon-rollback-gate-function', 'salt: pigeon-rollback-routes-function']) }}
{%- endif %}
