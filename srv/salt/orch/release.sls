{#- release: deactivated -> release. Starts the stack's containers in a free slot, waits until
    HAProxy has every one UP, then routes internal/preview traffic to it. Production is untouched.
    Pillar read: pigeon:app, pigeon:version, pigeon:force, pigeon:wait,
    pigeon:keep_failed, pigeon:expect_revision, pigeon:source (stacks.py or the reactor), stacks:<app>. #}
{%- set action = 'release' %}
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
{%-     set start = plan.start %}

{%-     if plan.converge_loadbal %}

# HAProxy up to date on the load balancer: a new app (or a changed loadbal: pillar) gets its
# slots, with a reload that loses nothing. Skipped when the registry has seen this loadbal: already.
pigeon-release-loadbal-state:
  salt.state:
    - tgt: {{ lb.target | tojson }}
    - tgt_type: {{ lb.target_type | tojson }}
    - sls: [docker, haproxy]
    - parallel: True     # beside the containers
    - concurrent: True   # the two may target the same minion; they touch different things
{%-     endif %}

# the app's config formula (its files and image for this version), then the stack's containers,
# all started at once; the step ends when docker says every one is healthy (its HEALTHCHECK)
pigeon-release-containers-state:
  salt.state:
    - tgt: {{ cfg.target | tojson }}
    - tgt_type: {{ cfg.target_type | tojson }}
    - sls: stacks.running
    - concurrent: True
    - pillar:
        pigeon_stack: {{ {'app': app, 'version': plan.version, 'formula': cfg.formula, 'network': start.network, 'containers': start.containers, 'keep': start.keep, 'healthy_timeout': lb.healthcheck_timeout} | tojson }}

# preview (internal) traffic to the new slot as soon as HAProxy has every one of its servers
# UP with its check passed (the HAProxy health gate, waited for in the same call)
{%-     set routes_requires = ['pigeon-release-containers-state'] %}
{%-     if plan.converge_loadbal %}{% do routes_requires.append('pigeon-release-loadbal-state') %}{% endif %}
{{ steps.routes(action, lb, plan, routes_requires, gate={'backend': start.backend, 'expected_up': start.expected_up}, wait=lb.healthcheck_timeout) }}

{%-     if not args.get('keep_failed') %}

# a release that failed leaves nothing behind (unless --keep-failed)
pigeon-release-cleanup-state:
  salt.state:
    - tgt: {{ cfg.target | tojson }}
    - tgt_type: {{ cfg.target_type | tojson }}
    - sls: stacks.absent
    - concurrent: True
    - pillar:
        pigeon_stack: {{ {'app': app, 'version': plan.version, 'network': start.network} | tojson }}
    - onfail_any:
      - salt: pigeon-release-containers-state
      - salt: pigeon-release-routes-function
{%-     endif %}
{%-     set done = done + ['pigeon-release-containers-state', 'pigeon-release-routes-function'] %}
{%-     if plan.converge_loadbal %}{% do done.append('pigeon-release-loadbal-state') %}{% endif %}
{%-   endif %}
{{ steps.commit(action, app, plan, source, done) }}
{%- endif %}
