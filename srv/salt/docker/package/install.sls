{%- from tpldir.split('/')[0] ~ "/map.jinja" import docker with context %}
docker-package-install-pkg-installed:
  pkg.installed:
    - name: {{ docker.pkg | tojson }}
{%- if docker.pkg_refresh is not none %}
    - refresh: {{ docker.pkg_refresh | tojson }}
{%- endif %}
