{#- <image>:<version> on the minion: built from config/ here, or pulled when build is false #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import demoapp, stack with context %}
include:
  - {{ tplroot }}.config

demoapp-image-build-docker-image-present:
  docker_image.present:
    - name: {{ demoapp.image | tojson }}
    - tag: {{ stack.version | string | tojson }}
{%- if demoapp.build %}
    - build: {{ (demoapp.build_dir ~ '/' ~ stack.version) | tojson }}
    - require:
      - sls: {{ tplroot }}.config
{%- endif %}
