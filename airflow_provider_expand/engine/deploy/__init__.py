"""The deploy onto a new image and back: the Docker client (``docker_client``), the crash-safe
container swap (``container_swap``), the release the ledger records (``release``), the entry point
(``run``) and the post-deploy watch (``watch``)."""
