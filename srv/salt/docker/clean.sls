# Undo the docker formula: stop the daemon (the package stays: other software may use it).
{%- from tpldir ~ "/map.jinja" import docker with context %}
{%- if grains.get('init') == 'systemd' %}
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
