# Undo the docker formula: stop the daemon (the package stays: other software may use it).
# A daemon this formula did not start (docker:start_daemon False) is left to whoever did.
{%- from tpldir ~ "/map.jinja" import docker with context %}
{%- if not docker.start_daemon %}
{#- nothing to undo: whoever started the daemon stops it #}
{%- elif grains.get('init') == 'systemd' %}
docker-clean-service-dead:
  service.dead:
    - name: {{ docker.service }}
    - enable: False
{%- else %}
docker-clean-cmd-run:
  cmd.run:
    - name: pkill dockerd
    - onlyif: pgrep dockerd
{%- endif %}
