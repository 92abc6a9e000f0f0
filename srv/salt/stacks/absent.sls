{#- One stack's containers removed from the app minion: stopped gracefully (their stop
    signal and timeout), then removed, then the stack's network. Found by their labels, so
    a partly started stack is cleaned as well. Pillar `pigeon_stack`: app, version, network. #}
{%- set stack = pillar['pigeon_stack'] %}
{%- set found = salt['docker.ps'](all=True, filters={'label': ['pigeon.app=' ~ stack.app, 'pigeon.version=' ~ stack.version]}) %}
{%- set names = [] %}
{%- for id, c in found.items() %}{% do names.append(c.Names[0].lstrip('/')) %}{% endfor %}

{%- if names %}
{#- they stop at once (`parallel: True` forks the run): the run first forgets the docker client it
    holds, so that each fork opens its own instead of sharing one connection #}
stacks-absent-docker-client-module-run:
  module.run:
    - stack_containers.forget_docker_client: []

stacks-absent-docker-container-stopped:
  docker_container.stopped:
    - names: {{ names | sort | tojson }}
    - parallel: True
    - require:
      - module: stacks-absent-docker-client-module-run

stacks-absent-docker-container-absent:
  docker_container.absent:
    - names: {{ names | sort | tojson }}
    - require:
      - docker_container: stacks-absent-docker-container-stopped
    - require_in:
      - docker_network: stacks-absent-docker-network-absent
{%- endif %}

stacks-absent-docker-network-absent:
  docker_network.absent:
    - name: {{ stack.network | tojson }}
