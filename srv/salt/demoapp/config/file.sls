{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import demoapp, stack with context %}
{%- if demoapp.build %}
demoapp-config-file-build-dir-file-directory:
  file.directory:
    - name: {{ (demoapp.build_dir ~ '/' ~ stack.version) | tojson }}
    - makedirs: True

demoapp-config-file-nginx-conf-file-managed:
  file.managed:
    - name: {{ (demoapp.build_dir ~ '/' ~ stack.version ~ '/nginx.conf') | tojson }}
    - source: salt://{{ tplroot }}/templates/nginx.conf.jinja
    - template: jinja
    - context:
        app: {{ stack.app | tojson }}
        version: {{ stack.version | tojson }}
    - require:
      - file: demoapp-config-file-build-dir-file-directory

demoapp-config-file-dockerfile-file-managed:
  file.managed:
    - name: {{ (demoapp.build_dir ~ '/' ~ stack.version ~ '/Dockerfile') | tojson }}
    - source: salt://{{ tplroot }}/templates/Dockerfile.jinja
    - template: jinja
    - context:
        base_image: {{ demoapp.base_image | tojson }}
    - require:
      - file: demoapp-config-file-build-dir-file-directory
{%- endif %}
