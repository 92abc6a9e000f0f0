{#- One stack's containers removed from the app minion: stopped gracefully (their stop
    signal and timeout), all at once, then removed, then the stack's network. Found by their
    labels, so a partly started stack is cleaned as well. Pillar `pigeon_stack`: app, version,
    network (from the plan, passed by orch/steps.jinja). #}
{%- set stack = pillar['pigeon_stack'] %}

stacks-absent-stack-containers-absent:
  stack_containers.absent:
    - name: {{ (stack.app ~ ' ' ~ stack.version) | tojson }}
    - app: {{ stack.app | tojson }}
    - version: {{ stack.version | tojson }}
    - network: {{ stack.network | tojson }}
