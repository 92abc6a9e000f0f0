{#- One stack's containers, started on the app minion. Everything comes from the plan
    (pillar `pigeon_stack`, passed by orch/steps.jinja; see _utils/pigeon_definition.py):
    the stack's own network (services reach each other by service name, isolated from other
    versions) and, for services labelled register_backend=true, the app's default network with
    the slot's alias that HAProxy resolves. Containers of versions the registry does not know
    (`keep`), left by an interrupted action, are removed first. #}
{%- set stack = pillar['pigeon_stack'] %}
{%- if stack.get('formula') %}
include:
  - {{ stack.formula | tojson }}   {#- the app's config formula: files and image first #}
{%- endif %}

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
    - keep: {{ stack.get('keep', []) | tojson }}
{%- if stack.get('addresses') %}
    - addresses: {{ stack.addresses | tojson }}   {#- where each minion publishes the load-balanced ports #}
{%- endif %}
{%- if stack.get('healthy_timeout') %}
    - healthy_timeout: {{ stack.healthy_timeout | tojson }}   {#- and healthy: every docker HEALTHCHECK passed #}
{%- endif %}
{%- if stack.get('formula') %}
    - require:
      - sls: {{ stack.formula | tojson }}
{%- endif %}
