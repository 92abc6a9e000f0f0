# Salt's docker module sends the salt mine a fresh `docker ps` (every container, inspected)
# after each container it creates, starts, stops or removes, unless told not to. Pigeon does
# not use the mine; with a stack's containers started at once, those refreshes were most of
# a release's `containers` step (2.5-2.8 s per container, 0.3-0.5 s without them).
docker.update_mine: False
