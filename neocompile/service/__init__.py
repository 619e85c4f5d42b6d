"""The SageMaker-compatible job service: what ``neocompile serve`` and ``neocompile worker`` run.

- ``protocol``: the wire (JSON 1.1 over HTTP: X-Amz-Target dispatch, bodies, AWS error bodies); ``sigv4``: request
  signatures.
- ``validation``: every request member checked against botocore's own SageMaker service model.
- ``jobs``: the compilation-job domain (states, transitions, Describe/List shapes, paging tokens, tags, lease
  recovery), no HTTP in it; ``transforms``: the same for models and batch transform jobs.
- ``store/``: one module per job store (``sqlite`` embedded, ``postgres`` for many machines).
- ``worker``: takes queued jobs and runs them: compiles in a supervised child process group, transform jobs through
  ``transform_runner`` (stop, deadline, lease).
- ``batch/``: batch transform's data plane: splitting, batching, the JSONPath filters, joins, assembly.
- ``inference``: the ``/invocations`` contract of a compiled package (content types in and out);
  ``model_server``: ``neocompile serve-model``, SageMaker's inference-container contract around it.
- ``server``: ``neocompile serve`` and ``neocompile worker``; ``client``: the ``neocompile jobs|models|transform``
  commands, a thin boto3 client of the same API.
"""
