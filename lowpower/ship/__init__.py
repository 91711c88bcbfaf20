"""From a checkpoint to a submission: the packager (``package`` the command; ``manifest``, ``closure`` and
``build`` its steps), the zip-app rules and import scan (``pyz``: import statements read by ``imports``,
imports written as code by ``imports_as_code``), the one way to run a package as the referee does
(``runner``), ONNX export (``export``), the pre-submission check (``presubmit``), and the
check of device-side code against the device's real torch 1.10 API (``device_api``)."""
