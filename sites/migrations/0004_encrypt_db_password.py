"""Site database passwords move from a plain column to an encrypted one."""

from django.db import migrations

import sites.fields
import sites.models


def encrypt_existing(apps, schema_editor):
    Site = apps.get_model("sites", "Site")
    for pk, password in Site.objects.values_list("pk", "db_password"):
        # The new field's get_prep_value encrypts.
        Site.objects.filter(pk=pk).update(db_password_encrypted=password)


class Migration(migrations.Migration):
    dependencies = [("sites", "0003_site_repairing_since")]

    operations = [
        migrations.AddField(
            model_name="site",
            name="db_password_encrypted",
            field=sites.fields.EncryptedTextField(default="", editable=False),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt_existing, migrations.RunPython.noop),
        migrations.RemoveField(model_name="site", name="db_password"),
        migrations.RenameField(model_name="site", old_name="db_password_encrypted", new_name="db_password"),
        migrations.AlterField(
            model_name="site",
            name="db_password",
            field=sites.fields.EncryptedTextField(default=sites.models._new_db_password, editable=False),
        ),
    ]
