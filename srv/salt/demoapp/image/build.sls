{#- <image>:<version> on the minion: built from config/ here, or pulled when build is false #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import demoapp, stack with context %}
include:
  - {{ tplroot }}.config

demoapp-image-build-docker-image-present:
  docker_image.present:
    - name: {{ demoapp.image }}
    - tag: {{ stack.version | string | json }}
{%- if demoapp.build %}
    - build: {{ demoapp.build_dir }}/{{ stack.version }}
    - require:
      - sls: {{ tplroot }}.config
{%- endif %}
