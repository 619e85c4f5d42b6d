"""The SageMaker-compatible job service: what ``neocompile serve`` and ``neocompile worker`` run.

- ``protocol``: the wire (JSON 1.1 over HTTP: X-Amz-Target dispatch, bodies, AWS error bodies); ``sigv4``: request
  signatures.
- ``validation``: every request member checked against botocore's own SageMaker service model.
- ``jobs``: the compilation-job domain (states, transitions, Describe/List shapes, paging tokens), no HTTP in it.
- ``store/``: one module per job store (``sqlite`` embedded, ``postgres`` for many machines).
- ``worker``: takes queued jobs and runs each compile in a supervised child process group (stop, deadline, lease).
- ``client``: the ``neocompile jobs`` commands, a thin boto3 client of the same API.
"""
