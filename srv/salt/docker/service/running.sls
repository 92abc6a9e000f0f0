{#- The docker daemon: checked only, when someone else starts it (docker:start_daemon False); else by
    the init system where there is one, else started in the background #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import docker with context %}
include:
  - {{ tplroot }}.package

{%- if not docker.start_daemon %}
{#- someone else starts this minion's daemon (docker.url): check it, never start another #}
docker-service-running-test-fail-without-changes:
  test.fail_without_changes:
    - name: "dockerd does not answer at this minion's docker.url, and docker:start_daemon is False: start it where it is managed (the lab: bootstrap/hosts.sh up HOST)"
    - unless:
      - fun: docker.version
    - require:
      - sls: {{ tplroot }}.package
{%- elif grains.get('init') == 'systemd' %}
docker-service-running-service-running:
  service.running:
    - name: {{ docker.service | tojson }}
    - enable: True
    - require:
      - sls: {{ tplroot }}.package
{%- else %}
docker-service-running-cmd-run:
  cmd.run:
    - name: >-
        nohup dockerd --userland-proxy={{ 'true' if docker.userland_proxy else 'false' }} >{{ docker.daemon_log | quote }} 2>&1 &
        for i in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1
    - unless:
      - fun: docker.version   # in-process: much quicker than a shell command
    - require:
      - sls: {{ tplroot }}.package
{%- endif %}
