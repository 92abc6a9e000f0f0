{#- One stack's containers, started on the app minion. Everything comes from the plan
    (pillar `pigeon_stack`, passed by orch/release.sls; see stacks.containers in _runners/stacks.py):
    the stack's own network (services reach each other by service name, isolated from other
    versions) and, for services labelled register_backend=true, the app's default network with
    the slot's alias that HAProxy resolves. #}
{%- set stack = pillar['pigeon_stack'] %}
{%- if stack.get('formula') %}
include:
  - {{ stack.formula | tojson }}   {#- the app's config formula: files and image first #}
{%- endif %}
{#- containers of this app whose version the registry does not know: left by an interrupted action #}
{%- set leftovers = {} %}
{%- for id, c in salt['docker.ps'](all=True, filters={'label': ['pigeon.app=' ~ stack.app]}).items() %}
{%-   set version = c.Labels.get('pigeon.version') %}
{%-   if version not in stack.get('keep', [stack.version]) %}
{%-     do leftovers.setdefault(version, []).append(c.Names[0].lstrip('/')) %}
{%-   endif %}
{%- endfor %}
{%- for version, names in leftovers | dictsort %}
{{ ('stacks-running-leftover-' ~ version ~ '-docker-container-absent') | tojson }}:
  docker_container.absent:
    - names: {{ names | sort | tojson }}
    - force: True   # they never took traffic

{{ ('stacks-running-leftover-' ~ version ~ '-docker-network-absent') | tojson }}:
  docker_network.absent:
    - name: {{ ('pigeon-' ~ stack.app ~ '-' ~ version) | tojson }}
    - require:
      - docker_container: {{ ('stacks-running-leftover-' ~ version ~ '-docker-container-absent') | tojson }}
{%- endfor %}

{#- All the stack's containers start at once (one docker client per container): created on
    the stack's network (created when missing), connected to the app's default network with
    the slot's alias when HAProxy routes to them, started. #}
stacks-running-stack-containers-running:
  stack_containers.running:
    - name: {{ (stack.app ~ ' ' ~ stack.version) | tojson }}
    - app: {{ stack.app | tojson }}
    - version: {{ stack.version | tojson }}
    - network: {{ stack.network | tojson }}
    - containers: {{ stack.containers | tojson }}
{%- if stack.get('healthy_timeout') %}
    - healthy_timeout: {{ stack.healthy_timeout | tojson }}   {#- and healthy: every docker HEALTHCHECK passed #}
{%- endif %}
{%- if stack.get('formula') %}
    - require:
      - sls: {{ stack.formula | tojson }}
{%- endif %}
