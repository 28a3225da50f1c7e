from django.apps import AppConfig


class PgQueueConfig(AppConfig):
    name = "pgqueue"
    verbose_name = "pgqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pgqueue import checks  # noqa: F401  (registers the system checks)
