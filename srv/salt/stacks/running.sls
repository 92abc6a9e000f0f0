{#- One stack's containers, started on the app minion. Everything comes from the plan
    (pillar `pigeon_stack`, passed by orch/release.sls; see stacks.containers in _runners/stacks.py):
    the stack's own network (services reach each other by service name, isolated from other
    versions) and, for services labelled register_backend=true, the app's default network with
    the slot's alias that HAProxy resolves. #}
{%- set stack = pillar['pigeon_stack'] %}
{%- if stack.get('formula') %}
include:
  - {{ stack.formula }}   {#- the app's config formula: files and image first #}
{%- endif %}
{%- set default_networks = [] %}
{%- for c in stack.containers %}{% for n in c.networks %}{% for name in n %}
{%-   if name != stack.network and name not in default_networks %}{% do default_networks.append(name) %}{% endif %}
{%- endfor %}{% endfor %}{% endfor %}

{#- containers of this app whose version the registry does not know: left by an interrupted action #}
{%- set leftovers = {} %}
{%- for id, c in salt['docker.ps'](all=True, filters={'label': ['pigeon.app=' ~ stack.app]}).items() %}
{%-   set version = c.Labels.get('pigeon.version') %}
{%-   if version not in stack.get('keep', [stack.version]) %}
{%-     do leftovers.setdefault(version, []).append(c.Names[0].lstrip('/')) %}
{%-   endif %}
{%- endfor %}
{%- for version, names in leftovers | dictsort %}
stacks-running-leftover-{{ version }}-docker-container-absent:
  docker_container.absent:
    - names: {{ names | sort | json }}
    - force: True   # they never took traffic

stacks-running-leftover-{{ version }}-docker-network-absent:
  docker_network.absent:
    - name: pigeon-{{ stack.app }}-{{ version }}
    - require:
      - docker_container: stacks-running-leftover-{{ version }}-docker-container-absent
{%- endfor %}

{%- for network in [stack.network] + default_networks %}
stacks-running-{{ network }}-docker-network-present:
  docker_network.present:
    - name: {{ network }}
    - labels:
      - pigeon.managed=true
{%- endfor %}

{#- The containers start at once (`parallel: True` forks the state run). The forks must not
    share the docker client this run already holds: sharing its connection once made an image
    lookup fail under load, and the state then tried to pull the image from a registry. So the
    client is forgotten first, and each fork opens its own. #}
stacks-running-docker-client-module-run:
  module.run:
    - stack_containers.forget_docker_client: []
    - require:
{%- if stack.get('formula') %}
      - sls: {{ stack.formula }}
{%- endif %}
{%- for network in [stack.network] + default_networks %}
      - docker_network: stacks-running-{{ network }}-docker-network-present
{%- endfor %}

{%- for c in stack.containers %}
stacks-running-{{ c.name }}-docker-container-running:
  docker_container.running:
    - name: {{ c.name }}
    - labels: {{ c.labels | json }}
    - networks: {{ c.networks | json }}
    - parallel: True
{%-   for key, value in c.docker_config | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
    - require:
      - module: stacks-running-docker-client-module-run
{%- endfor %}
