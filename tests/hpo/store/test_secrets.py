"""hpo/store/_secrets.py: the storage password is masked in URLs and in any text (C6)."""

import re

import pytest

from maskcls_hpo.hpo.store import display_url, mask_password, resolve_storage_url

SECRET = "S3cr3tTok3n"


def test_password_is_masked_everywhere():
    url = resolve_storage_url(f"postgresql+psycopg://maskcls:{SECRET}@127.0.0.1:5432/nosuchdb")
    assert display_url(url) == "postgresql+psycopg://maskcls:***@127.0.0.1:5432/nosuchdb"
    text = f"could not connect to {url}; password {SECRET} rejected"
    assert SECRET not in mask_password(text)
    assert mask_password(text).count("***") == 2


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://maskcls:Pw-userinfo-1@127.0.0.1:5432/db",
        "postgresql+psycopg://maskcls@127.0.0.1:5432/db?password=Pw-query-2",
        "postgresql+psycopg://maskcls@127.0.0.1/db?sslmode=disable&password=Pw-query-3&application_name=x",
        "postgresql://maskcls@127.0.0.1/db?password=Pw%40encoded-4",
        "postgresql://maskcls@127.0.0.1/db?sslpassword=Pw-ssl-5",
        "connection failed: host=127.0.0.1 user=maskcls password=Pw-conninfo-6 dbname=db",
        "cannot open storage 'postgresql://maskcls@h/db?PASSWORD=Pw-upper-7': refused",
    ],
)
def test_every_form_of_password_in_a_url_is_masked(text):
    secret = re.search(r"Pw[-%\w]+", text).group(0)
    masked = mask_password(text)
    assert secret not in masked and "***" in masked
    assert masked.replace("***", secret) == text  # nothing else changed


def test_query_string_password_is_masked_in_display_url():
    url = resolve_storage_url("postgresql://maskcls@127.0.0.1/db?password=Pw-display-8")
    assert display_url(url) == "postgresql+psycopg://maskcls@127.0.0.1/db?password=***"
