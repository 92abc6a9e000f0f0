# The lab's pillar. On a real master, target the load-balancer and app minions instead.
base:
  '*':
    - stacks
    - docker                 # docker.update_mine: False (see the file)
    - topology               # written by bootstrap/lab.sh for TOPOLOGY=multi: the stacks' targets there
    - test_stacks            # written by tests and benchmarks into .lab/pillar, only while they run
    - ignore_missing: True
  'lab-minion':
    - haproxy
    - demoapp
    - lab
    - ignore_missing: True   # lab.sls is written by bootstrap/lab.sh
  'debian-minion':           # a single VM set up by hand (docs/real-master.md): the same pillar
    - haproxy
    - demoapp
    - lab
    - ignore_missing: True   # lab.sls is written by hand there
  # the multi-host topology (the lab's hosts, bootstrap/hosts.sh; the Vagrant VMs): load
  # balancers lbN, app minions appN; topology.sls above sets the stacks' targets for them
  '^lb[0-9]$':
    - match: pcre
    - haproxy
    - lab
    - ignore_missing: True
  '^app[0-9]$':
    - match: pcre
    - demoapp
    - lab
    - ignore_missing: True
