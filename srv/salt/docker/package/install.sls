{%- from tpldir.split('/')[0] ~ "/map.jinja" import docker with context %}
docker-package-install-pkg-installed:
  pkg.installed:
    - name: {{ docker.pkg | tojson }}
