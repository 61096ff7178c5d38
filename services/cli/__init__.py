"""The ``taskroute`` command: run the platform (``up``), one service (``serve``), the demo."""
