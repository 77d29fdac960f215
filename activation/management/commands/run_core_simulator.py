import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from activation.core.simulator import SimulatorConfig, make_server


class Command(BaseCommand):
    help = "Serve the in-memory core credit system simulator (see shared/core-credit-api.md)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--token", default=settings.CORE_API_TOKEN)
        parser.add_argument("--webhook-secret", default=settings.CORE_WEBHOOK_SECRET)
        defaults = SimulatorConfig()
        for name, value in vars(defaults).items():
            if name == "script":
                continue
            if isinstance(value, bool):
                parser.add_argument("--" + name.replace("_", "-"), action="store_true", dest=name)
                continue
            parser.add_argument(
                "--" + name.replace("_", "-"), type=type(value), default=value, dest=name
            )

    def handle(self, *args, host, port, token, webhook_secret, **options):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s core-sim %(message)s")
        config = SimulatorConfig()
        config.update({name: options[name] for name in vars(config) if name in options})
        server, _simulator = make_server(
            host=host, port=port, token=token, webhook_secret=webhook_secret, config=config
        )
        self.stdout.write(f"Core simulator listening on http://{host}:{server.server_port}")
        self.stdout.flush()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
