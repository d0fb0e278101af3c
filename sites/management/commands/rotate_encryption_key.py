"""Re-encrypt every stored secret with the first key of WPFLEET_ENCRYPTION_KEYS.

Rotation: put a new key first in WPFLEET_ENCRYPTION_KEYS (keep the old one
after it), restart the panel, run this command, then drop the old key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from sites.models import Site
from sites.models.fields import rotate


class Command(BaseCommand):
    help = "Re-encrypt the stored site database passwords with the first key of WPFLEET_ENCRYPTION_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        table = connection.ops.quote_name(Site._meta.db_table)
        column = connection.ops.quote_name(str(Site._meta.get_field("db_password").column))
        rotated = 0
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Raw tokens: the field would decrypt on read and encrypt anew on
                # write, which is the same thing done the long way.
                cursor.execute(f"SELECT id, {column} FROM {table}")
                rows = cursor.fetchall()
                for pk, token in rows:
                    if token:
                        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [rotate(token), pk])
                        rotated += 1
        self.stdout.write(f"re-encrypted {rotated} site database password(s) with the first key")
