# Undo the haproxy formula: the container, then its files.
{%- from tpldir ~ "/map.jinja" import haproxy with context %}
haproxy-clean-docker-container-absent:
  docker_container.absent:
    - name: {{ haproxy.container_name | tojson }}
    - force: True

haproxy-clean-file-absent:
  file.absent:
    - name: {{ haproxy.host_dir | tojson }}
    - require:
      - docker_container: haproxy-clean-docker-container-absent
