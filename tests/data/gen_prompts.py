#!/usr/bin/env python3
"""Generate tests/data/prompts.jsonl: a labelled corpus of chatbot prompts for
measuring precision/recall of the PII / secret detector (src/inspect).

Regenerate (from the repository root):

    python3 -m venv .venv && .venv/bin/pip install Faker==40.63.0 && .venv/bin/python tests/data/gen_prompts.py > tests/data/prompts.jsonl

The output is deterministic for a given Faker version (Faker.seed and
random.seed are both fixed to 20261125). A per-type summary is printed to
stderr. Every generated line is linted before it is emitted (offsets, Luhn,
mod-97, token shapes, and a scan of the unlabelled text for anything that
looks like one of the entity types); a prompt that fails the lint is
regenerated, and the script exits non-zero if the final corpus fails.

Each line is {"id": N, "text": ..., "entities": [{"type", "start", "end", "value"}]}
where start/end are UTF-8 *byte* offsets into text.
"""

import base64
import collections
import ipaddress
import itertools
import json
import random
import re
import string
import sys
import unicodedata

from faker import Faker

SEED = 20261125
fake = Faker("en_US")
Faker.seed(SEED)
random.seed(SEED)
R = random

N_NEGATIVE = 270
N_SINGLE = 180
N_MULTI = 150

TYPES = [
    "EMAIL", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "PHONE",
    "AWS_ACCESS_KEY", "GITHUB_TOKEN", "GITLAB_TOKEN", "SLACK_TOKEN",
    "STRIPE_KEY", "OPENAI_KEY", "ANTHROPIC_KEY", "PRIVATE_KEY", "JWT",
    "GENERIC_SECRET",
]

# ---------------------------------------------------------------------------
# Assembly: a prompt is a (nested) list of str and Ent parts.
# ---------------------------------------------------------------------------


class Ent:
    __slots__ = ("type", "value")

    def __init__(self, type_, value):
        self.type = type_
        self.value = value


def build(parts):
    chunks, ents = [], []
    pos = [0, 0]  # bytes, chars

    def walk(p):
        if p is None:
            return
        if isinstance(p, str):
            chunks.append(p)
            pos[0] += len(p.encode("utf-8"))
            pos[1] += len(p)
        elif isinstance(p, Ent):
            b, c = pos
            chunks.append(p.value)
            pos[0] += len(p.value.encode("utf-8"))
            pos[1] += len(p.value)
            ents.append({"type": p.type, "start": b, "end": pos[0], "value": p.value,
                         "_cstart": c, "_cend": pos[1]})
        else:
            for q in p:
                walk(q)

    walk(parts)
    return "".join(chunks), ents


def pick(seq):
    return R.choice(seq)


def maybe(p, part):
    return part if R.random() < p else ""


# ---------------------------------------------------------------------------
# Random helpers
# ---------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
B32UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Substrings that would plant a second, nested "entity" inside a random body.
NESTED = ["akia", "asia", "ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat", "glpat",
          "xox", "sk_live", "rk_live", "sk_test", "sk-", "eyj", "begin", "secret",
          "token", "passw", "pwd", "api_key", "apikey", "api-key"]


def rstr(alphabet, n):
    return "".join(R.choice(alphabet) for _ in range(n))


def rdigits(n, first_nonzero=True):
    s = "".join(R.choice(string.digits) for _ in range(n))
    if first_nonzero and s[0] == "0":
        s = str(R.randint(1, 9)) + s[1:]
    return s


def clean(s):
    low = s.lower()
    return not any(b in low for b in NESTED)


def rtoken(alphabet, n):
    """Random body whose first/last char is alphanumeric and which contains no
    other detector anchor."""
    while True:
        s = rstr(alphabet, n)
        if s[0].isalnum() and s[-1].isalnum() and clean(s):
            return s


# ---------------------------------------------------------------------------
# Names, places, dates, money (no entities)
# ---------------------------------------------------------------------------

NON_ASCII_NAMES = [
    ("Zoë", "Müller"), ("Søren", "Østergaard"), ("José", "Álvarez"), ("Chloé", "Dubois"),
    ("Jürgen", "Weiß"), ("Björn", "Lindqvist"), ("François", "Lefèvre"), ("Renée", "Gauthier"),
    ("Ingrid", "Bjørnstad"), ("Andrés", "Peña"), ("Noémie", "Fontaine"), ("Lukáš", "Dvořák"),
    ("Håkon", "Ødegård"), ("Élodie", "Moreau"), ("Günther", "Schröder"), ("Mette", "Sørensen"),
    ("Hélène", "Rousseau"), ("Jörg", "Krüger"), ("Anaïs", "Bénard"), ("Kjær", "Nørgaard"),
]
FOLD = {"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "ł": "l", "đ": "d"}


def fold(s):
    s = "".join(FOLD.get(ch, ch) for ch in s)
    s = unicodedata.normalize("NFKD", s)
    return "".join(ch for ch in s if ch in string.ascii_letters)


def person(p_non_ascii=0.2):
    if R.random() < p_non_ascii:
        return pick(NON_ASCII_NAMES)
    return fake.first_name(), fake.last_name()


def full(p):
    return p[0] + " " + p[1]


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def rymd():
    return R.randint(2022, 2025), R.randint(1, 12), R.randint(1, 28)


def d_iso():
    return "%04d-%02d-%02d" % rymd()


def d_eu():
    y, m, d = rymd()
    return "%02d/%02d/%04d" % (d, m, y)


def d_us():
    y, m, d = rymd()
    return "%02d/%02d/%04d" % (m, d, y)


def d_human():
    y, m, d = rymd()
    return pick(["%s %d" % (MONTHS[m - 1], d), "%d %s %d" % (d, MONTHS[m - 1], y),
                 "%s %d, %d" % (MONTHS[m - 1], d, y)])


def ts_iso():
    y, m, d = rymd()
    frac = pick(["", ".%03d" % R.randint(0, 999)])
    return "%04d-%02d-%02dT%02d:%02d:%02d%sZ" % (y, m, d, R.randint(0, 23), R.randint(0, 59),
                                                 R.randint(0, 59), frac)


def ts_log():
    y, m, d = rymd()
    return "%04d-%02d-%02d %02d:%02d:%02d" % (y, m, d, R.randint(0, 23), R.randint(0, 59),
                                              R.randint(0, 59))


def ts_clf():
    y, m, d = rymd()
    return "%02d/%s/%04d:%02d:%02d:%02d +0000" % (d, MONTHS[m - 1][:3], y, R.randint(0, 23),
                                                  R.randint(0, 59), R.randint(0, 59))


def epoch():
    return str(R.randint(1640995200, 1767225599))


def usd(lo=500, hi=900000):
    c = R.randint(lo, hi)
    return "$%s.%02d" % (format(c // 100, ","), c % 100)


def eur(lo=500, hi=900000):
    c = R.randint(lo, hi)
    return "€%s,%02d" % (format(c // 100, ",").replace(",", "."), c % 100)


def company():
    return fake.company()


def city():
    return fake.city()


# ---------------------------------------------------------------------------
# Entity value generators
# ---------------------------------------------------------------------------

FREE_DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "hotmail.com", "icloud.com",
                "proton.me", "gmx.de", "web.de", "orange.fr", "live.nl", "aol.com"]
PLUS_TAGS = ["invoices", "news", "shop", "jobs", "test", "billing", "amazon", "travel", "dev"]
SUBDOMAINS = ["mail", "eu", "corp", "us", "dev", "support", "hr", "eng.corp", "mx.eu"]


def email_for(p=None):
    if p is None:
        r = R.random()
        if r < 0.25:
            return fake.email()
        if r < 0.45:
            return fake.company_email()
        if r < 0.6:
            return fake.free_email()
        p = person()
    f = fold(p[0]).lower()
    last = fold(p[1]).lower()
    local = pick([f + "." + last, f[0] + last, f + "_" + last, f + last + str(R.randint(1, 99)),
                  last + "." + f, f, f + "." + last[0]])
    if R.random() < 0.15:
        local += "+" + pick(PLUS_TAGS)
    if R.random() < 0.5:
        domain = pick(FREE_DOMAINS)
    else:
        domain = fake.domain_name()
    if R.random() < 0.15:
        domain = pick(SUBDOMAINS) + "." + domain
    return local + "@" + domain


def email_plus():
    e = email_for(person())
    if "+" not in e:
        local, dom = e.split("@")
        e = local + "+" + pick(PLUS_TAGS) + "@" + dom
    return e


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_digit(body):
    for d in "0123456789":
        if luhn_ok(body + d):
            return d
    raise AssertionError


BRANDS = ["visa", "visa", "mastercard", "mastercard", "amex", "discover"]
BRAND_NAME = {"visa": "Visa", "mastercard": "Mastercard", "amex": "Amex", "discover": "Discover"}


def card_number(brand):
    if brand == "visa":
        prefix, n = "4", 16
    elif brand == "mastercard":
        prefix = str(R.randint(51, 55)) if R.random() < 0.7 else str(R.randint(2221, 2720))
        n = 16
    elif brand == "amex":
        prefix, n = pick(["34", "37"]), 15
    else:
        prefix, n = pick(["6011", "65"]), 16
    body = prefix + rdigits(n - 1 - len(prefix), first_nonzero=False)
    return body + luhn_digit(body)


def fmt_card(num, style):
    if style == "plain":
        return num
    sep = " " if style == "space" else "-"
    if len(num) == 15:
        groups = [num[:4], num[4:10], num[10:]]
    else:
        groups = [num[i:i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def card(brand=None, style=None):
    brand = brand or pick(BRANDS)
    style = style or pick(["plain", "space", "space", "dash"])
    return fmt_card(card_number(brand), style)


def ssn():
    while True:
        area = R.randint(1, 899)
        if area != 666:
            break
    return "%03d-%02d-%04d" % (area, R.randint(1, 99), R.randint(1, 9999))


IBAN_LEN = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24}


def iban_check(cc, bban):
    num = "".join(str(int(ch, 36)) for ch in bban + cc + "00")
    return "%02d" % (98 - int(num) % 97)


def iban_valid(s):
    s = s.replace(" ", "")
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", s):
        return False
    if s[:2] in IBAN_LEN and len(s) != IBAN_LEN[s[:2]]:
        return False
    num = "".join(str(int(ch, 36)) for ch in s[4:] + s[:4])
    return int(num) % 97 == 1


def fr_rib_key(bank, branch, account):
    return "%02d" % (97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97)


def es_check(bank, branch, account):
    def dc(digits, weights):
        v = 11 - sum(int(d) * w for d, w in zip(digits, weights)) % 11
        return {10: 1, 11: 0}.get(v, v)
    w = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]
    return "%d%d" % (dc("00" + bank + branch, w), dc(account, w))


IBAN_COUNTRIES = itertools.cycle(["DE", "GB", "FR", "DE", "NL", "ES"])


def iban_compact(cc=None):
    cc = cc or next(IBAN_COUNTRIES)
    if cc == "DE":
        bban = rdigits(8) + rdigits(10, first_nonzero=False)
    elif cc == "GB":
        bban = pick(["NWBK", "BARC", "LOYD", "HBUK", "MIDL", "MONZ"]) + rdigits(6) + rdigits(8, False)
    elif cc == "FR":
        bank, branch, acct = rdigits(5), rdigits(5, False), rdigits(11, False)
        bban = bank + branch + acct + fr_rib_key(bank, branch, acct)
    elif cc == "NL":
        bban = pick(["ABNA", "INGB", "RABO", "TRIO", "KNAB", "SNSB"]) + rdigits(10, False)
    else:
        bank, branch, acct = rdigits(4), rdigits(4, False), rdigits(10, False)
        bban = bank + branch + es_check(bank, branch, acct) + acct
    return cc + iban_check(cc, bban) + bban


def iban(style=None, cc=None):
    s = iban_compact(cc)
    style = style or pick(["compact", "spaced"])
    if style == "spaced":
        s = " ".join(s[i:i + 4] for i in range(0, len(s), 4))
    return s


def ipv4(public=False):
    while True:
        ip = fake.ipv4_public() if public or R.random() < 0.6 else fake.ipv4_private()
        parts = [int(x) for x in ip.split(".")]
        if parts[0] in (0, 127) or parts[3] in (0, 255):
            continue
        return ip


FIXED_V6 = ["2001:db8::1", "2606:4700:4700::1111", "2001:4860:4860::8888",
            "2a00:1450:4001:82b::200e", "2001:db8:85a3::8a2e:370:7334", "fd12:3456:789a:1::1"]


def ipv6():
    r = R.random()
    if r < 0.4:
        return fake.ipv6()
    if r < 0.7:
        groups = [0x2001, 0x0DB8] + [R.randint(0, 0xFFFF) for _ in range(6)]
        z = R.randint(2, 5)
        for i in range(z, min(8, z + R.randint(1, 3))):
            groups[i] = 0
        return ipaddress.IPv6Address(":".join("%x" % g for g in groups)).compressed
    if r < 0.85:
        mac = [R.randint(0, 255) for _ in range(6)]
        g = [0xFE80, 0, 0, 0, ((mac[0] ^ 2) << 8) | mac[1], (mac[2] << 8) | 0xFF,
             0xFE00 | mac[3], (mac[4] << 8) | mac[5]]
        return ipaddress.IPv6Address(":".join("%x" % x for x in g)).compressed
    return pick(FIXED_V6)


def ip_any():
    return ipv4() if R.random() < 0.72 else ipv6()


US_AREAS = [212, 213, 303, 305, 312, 347, 404, 415, 503, 512, 602, 617, 619, 646, 702, 713,
            718, 727, 773, 805, 818, 917, 929, 972, 206]


def phone_us():
    a = pick(US_AREAS)
    if R.random() < 0.4:
        e, line = 555, "01%02d" % R.randint(0, 99)
    else:
        while True:
            e = R.randint(201, 989)
            if e % 100 != 11 and e != 555:
                break
        line = "%04d" % R.randint(0, 9999)
    fmt = pick(["({a}) {e}-{l}", "({a}) {e}-{l}", "+1 {a} {e} {l}", "{a}-{e}-{l}",
                "{a}-{e}-{l}", "+1 ({a}) {e}-{l}", "+1{a}{e}{l}", "+1-{a}-{e}-{l}"])
    return fmt.format(a=a, e=e, l=line)


def phone_intl():
    return pick([
        lambda: "+44207946%04d" % R.randint(0, 999),
        lambda: "+44 20 7946 %04d" % R.randint(0, 999),
        lambda: "+44 7700 900%03d" % R.randint(0, 999),
        lambda: "+49 30 %s" % rdigits(6),
        lambda: "+4930%s" % rdigits(7),
        lambda: "+49 151 %s" % rdigits(8),
        lambda: "+49 89 %s %s" % (rdigits(3), rdigits(4)),
        lambda: "+33 1 %02d %02d %02d %02d" % tuple(R.randint(10, 99) for _ in range(4)),
        lambda: "+33612%s" % rdigits(6, False),
        lambda: "+31 20 %s %s" % (rdigits(3), rdigits(4)),
        lambda: "+34 91 %s %s %s" % (rdigits(3), rdigits(2, False), rdigits(2, False)),
        lambda: "+353 1 %s %s" % (rdigits(3), rdigits(4)),
        lambda: "+45 %s %s %s %s" % tuple(rdigits(2) for _ in range(4)),
    ])()


def phone_any():
    return phone_us() if R.random() < 0.5 else phone_intl()


def aws_key():
    return "AKIA" + rtoken(B32UP, 16)


def aws_secret():
    return rtoken(ALNUM + "/+", 40)


def github_token():
    r = R.random()
    if r < 0.55:
        return "ghp_" + rtoken(ALNUM, 36)
    if r < 0.68:
        return "gho_" + rtoken(ALNUM, 36)
    if r < 0.78:
        return "ghs_" + rtoken(ALNUM, 36)
    return "github_pat_" + rtoken(ALNUM, 22) + "_" + rtoken(ALNUM, 59)


def gitlab_token():
    return "glpat-" + rtoken(B64URL, 20)


def slack_token():
    pre = "xoxb-" if R.random() < 0.7 else "xoxp-"
    return pre + rdigits(R.randint(10, 12)) + "-" + rdigits(R.randint(10, 13)) + "-" + rtoken(ALNUM, 24)


def stripe_key():
    pre = "sk_live_" if R.random() < 0.75 else "rk_live_"
    n = pick([24, 24, 34, 99, 99, R.randint(24, 99)])
    if n == 99 and R.random() < 0.7:
        return pre + "51" + rtoken(ALNUM, n - 2)
    return pre + rtoken(ALNUM, n)


def openai_key():
    if R.random() < 0.7:
        n = R.randint(100, 150)
        if R.random() < 0.6:
            a = R.randint(40, n - 48)
            body = rtoken(B64URL, a) + "T3BlbkFJ" + rtoken(B64URL, n - a - 8)
        else:
            body = rtoken(B64URL, n)
        return "sk-proj-" + body
    return "sk-" + rtoken(ALNUM, 20) + "T3BlbkFJ" + rtoken(ALNUM, 20)


def anthropic_key():
    return "sk-ant-api03-" + rtoken(B64URL, 93) + "AA"


PEM_PREFIX = {
    "RSA PRIVATE KEY": bytes.fromhex("308204a40201000282010100"),
    "PRIVATE KEY": bytes.fromhex("308204be020100300d06092a864886f70d0101010500048204a8"),
    "EC PRIVATE KEY": bytes.fromhex("307702010104"),
    "OPENSSH PRIVATE KEY": b"openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none",
}


PEM_LABELS = itertools.cycle(["RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY"])


def pem(label=None, nl="\n"):
    label = label or next(PEM_LABELS)
    lines = R.randint(5, 10)
    while True:
        nbytes = 48 * (lines - 1) + R.choice([48, R.randint(10, 47)])
        prefix = PEM_PREFIX[label]
        raw = prefix + bytes(R.randint(0, 255) for _ in range(nbytes - len(prefix)))
        b64 = base64.b64encode(raw).decode()
        low = b64.lower()
        if "eyj" not in low and "akia" not in low and "asia" not in low:
            break
    body = nl.join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return "-----BEGIN %s-----%s%s%s-----END %s-----" % (label, nl, body, nl, label)


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def jwt(email=None):
    alg = pick(["HS256", "HS256", "RS256"])
    header = {"alg": alg, "typ": "JWT"}
    if alg == "RS256" and R.random() < 0.5:
        header["kid"] = rtoken(ALNUM, 16)
    now = R.randint(1700000000, 1767225599)
    payload = {"sub": pick([fake.uuid4(), rdigits(R.randint(6, 10)), "user_" + rtoken(ALNUM, 12)])}
    if R.random() < 0.6:
        payload["email"] = email or email_for()
    if R.random() < 0.5:
        payload["name"] = full(person())
    payload["iat"] = now
    payload["exp"] = now + pick([900, 3600, 86400])
    if R.random() < 0.5:
        payload["iss"] = "https://auth." + fake.domain_name()
    if R.random() < 0.4:
        payload["role"] = pick(["admin", "user", "support", "billing"])
    enc = lambda o: b64url(json.dumps(o, separators=(",", ":")).encode())
    sig = b64url(bytes(R.randint(0, 255) for _ in range(R.randint(32, 64))))
    return enc(header) + "." + enc(payload) + "." + sig


SECRET_PUNCT = "!%^&*-_+.?~"


def secret_value(n=None):
    n = n or R.randint(12, 40)
    while True:
        s = rstr(ALNUM + SECRET_PUNCT * 2, n)
        if not (s[0].isalnum() and s[-1].isalnum() and clean(s)):
            continue
        if (any(c.isupper() for c in s) and any(c.islower() for c in s)
                and any(c.isdigit() for c in s) and any(c in SECRET_PUNCT for c in s)):
            return s


def secret_alnum(n=None):
    """A high-entropy value without punctuation (client secrets, API keys)."""
    n = n or R.randint(24, 40)
    while True:
        s = rtoken(ALNUM, n)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
            return s


def secret_any():
    r = R.random()
    if r < 0.65:
        return secret_value()
    if r < 0.85:
        return secret_alnum()
    return aws_secret()


# Entity part shortcuts ------------------------------------------------------

def EMAIL(p=None):
    return Ent("EMAIL", email_for(p))


def CARD(brand=None, style=None):
    return Ent("CREDIT_CARD", card(brand, style))


def SSN():
    return Ent("US_SSN", ssn())


def IBAN(style=None, cc=None):
    return Ent("IBAN", iban(style, cc))


def IP4():
    return Ent("IP_ADDRESS", ipv4())


def IP6():
    return Ent("IP_ADDRESS", ipv6())


def IP():
    return Ent("IP_ADDRESS", ip_any())


def PHONE(kind=None):
    v = phone_us() if kind == "us" else phone_intl() if kind == "intl" else phone_any()
    return Ent("PHONE", v)


def AWS():
    return Ent("AWS_ACCESS_KEY", aws_key())


def GH():
    return Ent("GITHUB_TOKEN", github_token())


def GL():
    return Ent("GITLAB_TOKEN", gitlab_token())


def SLACK():
    return Ent("SLACK_TOKEN", slack_token())


def STRIPE():
    return Ent("STRIPE_KEY", stripe_key())


def OPENAI():
    return Ent("OPENAI_KEY", openai_key())


def ANT():
    return Ent("ANTHROPIC_KEY", anthropic_key())


def PEM(label=None, nl="\n"):
    return Ent("PRIVATE_KEY", pem(label, nl))


def JWT(email=None):
    return Ent("JWT", jwt(email))


def SECRET(v=None):
    return Ent("GENERIC_SECRET", v or secret_any())


# ---------------------------------------------------------------------------
# Hard negatives (never labelled)
# ---------------------------------------------------------------------------

def n_order16():
    while True:
        s = pick("4563789") + rdigits(15, False)
        if not luhn_ok(s):
            return s


def n_invoice():
    return "INV-%d-%06d" % (R.randint(2022, 2025), R.randint(1, 999999))


def n_9digit():
    return rdigits(9)


def n_version():
    return pick([
        lambda: "v%d.%d.%d" % (R.randint(0, 5), R.randint(0, 30), R.randint(0, 40)),
        lambda: "version 10.0.%d.%d" % (R.randint(19041, 22631), R.randint(256, 4000)),
        lambda: "v%d.%d.%d.%d" % (R.randint(1, 9), R.randint(0, 9), R.randint(0, 9), R.randint(1000, 9999)),
        lambda: "%d.%d.%d" % (R.randint(1, 20), R.randint(0, 30), R.randint(0, 200)),
        lambda: "Python 3.%d.%d" % (R.randint(8, 13), R.randint(0, 12)),
        lambda: "node v%d.%d.%d" % (R.randint(16, 22), R.randint(0, 20), R.randint(0, 9)),
    ])()


def n_chrome():
    return "Chrome/%d.0.%d.%d" % (R.randint(110, 131), R.randint(5400, 6800), R.randint(20, 250))


def n_useragent():
    return ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            + n_chrome() + " Safari/537.36")


def n_tracking():
    return pick([
        lambda: "1Z" + rstr("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", 6).upper() + rdigits(10, False),
        lambda: rdigits(12),
        lambda: "9400" + rdigits(18, False),
        lambda: "JD" + rdigits(18, False),
    ])()


def isbn13():
    body = "978" + rdigits(9, False)
    s = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body))
    check = (10 - s % 10) % 10
    d = body + str(check)
    return "%s-%s-%s-%s-%s" % (d[:3], d[3], d[4:7], d[7:12], d[12])


def n_bad_iban():
    if R.random() < 0.3:
        return "DE89370400440532013001"
    s = iban_compact()
    while True:
        i = R.randint(5, len(s) - 1)
        if s[i].isdigit():
            t = s[:i] + str((int(s[i]) + R.randint(1, 9)) % 10) + s[i + 1:]
            if not iban_valid(t):
                return t


def n_pw_placeholder():
    return pick(["********", "<your-password>", "$PASSWORD", "${DB_PASSWORD}", "<password>",
                 "[REDACTED]", "xxxxxxxx", "${{ secrets.DB_PASSWORD }}", "<changeme>"])


def n_sk_word():
    return pick(["task-list", "disk-usage", "risk-score", "desk-booking", "kiosk-mode",
                 "ask-me-anything", "task-runner", "whisk-mixer", "risk-matrix", "disk-cleanup"])


def n_b64img():
    while True:
        tail = rstr(string.ascii_letters + string.digits + "+/", R.randint(16, 40))
        if "eyj" not in tail.lower() and "akia" not in tail.lower() and "asia" not in tail.lower():
            return "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA" + tail + "..."


def n_mac():
    return ":".join("%02x" % R.randint(0, 255) for _ in range(6))


def n_sku():
    return "SKU-%05d-%s" % (R.randint(10000, 99999), pick("ABCDEFGH"))


def n_last4():
    return "%04d" % R.randint(0, 9999)


def n_ticket():
    return pick(["#%d" % R.randint(10000, 999999), "JIRA-%d" % R.randint(100, 9999),
                 "CASE-%s" % rdigits(8), "SR-%d" % R.randint(100000, 999999)])


def uuid():
    return fake.uuid4()


def sha1():
    return fake.sha1()


def sha256():
    return fake.sha256()


# ---------------------------------------------------------------------------
# Code-ish building blocks
# ---------------------------------------------------------------------------

def env_line_secret():
    """One KEY=value line carrying exactly one entity."""
    return pick([
        lambda: ["DB_PASSWORD=", SECRET(secret_value())],
        lambda: ["POSTGRES_PASSWORD=", SECRET(secret_value())],
        lambda: ["REDIS_PASSWORD=", SECRET(secret_value())],
        lambda: ["SMTP_PASSWORD=", SECRET(secret_value())],
        lambda: ["JWT_SECRET=", SECRET(secret_alnum())],
        lambda: ["SESSION_SECRET=", SECRET(secret_value())],
        lambda: ["API_KEY=", SECRET(secret_alnum())],
        lambda: ["AWS_ACCESS_KEY_ID=", AWS()],
        lambda: ["AWS_SECRET_ACCESS_KEY=", SECRET(aws_secret())],
        lambda: ["STRIPE_SECRET_KEY=", STRIPE()],
        lambda: ["OPENAI_API_KEY=", OPENAI()],
        lambda: ["ANTHROPIC_API_KEY=", ANT()],
        lambda: ["SLACK_BOT_TOKEN=", SLACK()],
        lambda: ["GITHUB_TOKEN=", GH()],
        lambda: ["GITLAB_TOKEN=", GL()],
        lambda: ["ADMIN_EMAIL=", EMAIL()],
        lambda: ["REDIS_HOST=", IP4()],
        lambda: ["DB_HOST=", IP4()],
    ])()


def env_line_plain():
    return pick([
        "NODE_ENV=production", "PORT=8080", "LOG_LEVEL=debug", "APP_NAME=billing-api",
        "FEATURE_FLAGS=task-list,dark-mode", "DATABASE_NAME=orders", "TZ=UTC",
        "AWS_REGION=eu-west-1", "AWS_DEFAULT_REGION=us-east-1", "DB_PORT=5432", "DB_USER=app",
        "REDIS_PORT=6379", "WORKERS=4", "CACHE_TTL=300", "SENTRY_ENVIRONMENT=staging",
        "DB_PASSWORD=" + n_pw_placeholder(),
    ])


def env_file(min_secrets=1, max_secrets=4):
    lines = []
    for _ in range(R.randint(min_secrets, max_secrets)):
        lines.append(env_line_secret())
    for _ in range(R.randint(1, 4)):
        lines.append([env_line_plain()])
    R.shuffle(lines)
    out = []
    for ln in lines:
        out.append(ln)
        out.append("\n")
    return out


PY_SNIPPETS = [
    "def chunked(items, size):\n    for i in range(0, len(items), size):\n        yield items[i:i + size]\n",
    "import pandas as pd\n\ndf = pd.read_csv(\"orders.csv\", parse_dates=[\"created_at\"])\nmonthly = df.groupby(df.created_at.dt.to_period(\"M\"))[\"amount\"].sum()\nprint(monthly.tail(12))\n",
    "from dataclasses import dataclass\n\n@dataclass\nclass Order:\n    order_id: str\n    amount_cents: int\n    currency: str = \"EUR\"\n\n    def total(self) -> float:\n        return self.amount_cents / 100\n",
    "async def fetch_all(session, urls):\n    tasks = [session.get(u) for u in urls]\n    return await asyncio.gather(*tasks)\n",
    "def is_palindrome(s: str) -> bool:\n    s = ''.join(ch.lower() for ch in s if ch.isalnum())\n    return s == s[::-1]\n",
    "import os\n\nDB_PASSWORD = os.environ[\"DB_PASSWORD\"]\nAPI_KEY = os.getenv(\"API_KEY\")\nif not API_KEY:\n    raise RuntimeError(\"API_KEY is not set\")\n",
    "with open(\"report.txt\") as fh:\n    counts = {}\n    for line in fh:\n        for word in line.split():\n            counts[word] = counts.get(word, 0) + 1\n",
    "@app.route(\"/password-reset\", methods=[\"POST\"])\ndef password_reset():\n    form = ResetForm(request.form)\n    if not form.validate():\n        return render_template(\"reset.html\", form=form), 400\n",
    "def retry(fn, attempts=3, backoff=0.5):\n    for n in range(attempts):\n        try:\n            return fn()\n        except TimeoutError:\n            time.sleep(backoff * 2 ** n)\n    raise\n",
]


# ---------------------------------------------------------------------------
# NEGATIVE templates: no entity, but hard negatives
# ---------------------------------------------------------------------------

def neg_templates():
    return [
        lambda: ["Can you write a polite email to a customer whose order ", n_order16(),
                 " shipped late? The tracking number is ", n_tracking(), " and they paid ", usd(),
                 " on ", d_eu(), "."],
        lambda: ["My order number is ", n_order16(), " and the support page says it's invalid. "
                 "Is there a checksum on order numbers or am I typing it wrong?"],
        lambda: ["Our invoice ", n_invoice(), " for ", eur(), " was due on ", d_eu(),
                 ". Draft a friendly payment reminder in German for ", company(), "."],
        lambda: ["winver says I'm on ", n_version() if R.random() < 0.3 else "version 10.0.%d.%d" % (R.randint(19041, 22631), R.randint(256, 4000)),
                 " and update KB", rdigits(7), " keeps failing at ", ts_iso(), ". What should I try next?"],
        lambda: ["Explain this log line:\n`", ts_iso(), " INFO request_id=", uuid(), " customer_id=",
                 n_9digit(), " latency_ms=", str(R.randint(3, 900)), " status=200`"],
        lambda: ["Why does this function run slowly on big lists?\n\n```python\n", pick(PY_SNIPPETS), "```"],
        lambda: ["Review this Python for style issues, no need to run it:\n```python\n", pick(PY_SNIPPETS), "```"],
        lambda: ["Here is our .env.example, is it OK to commit?\n```\nDB_HOST=localhost\nDB_USER=app\nDB_PASSWORD=",
                 n_pw_placeholder(), "\nAPI_KEY=<your-api-key>\nSTRIPE_SECRET_KEY=", pick(["sk_live_...", "<stripe-key>", "$STRIPE_KEY"]),
                 "\nOPENAI_API_KEY=\n```"],
        lambda: ["Our password reset emails keep landing in spam. Suggest five better subject lines and a short body text."],
        lambda: ["Translate to French: \"Your password reset link expires in 24 hours. If you did not request a password reset, ignore this message.\""],
        lambda: ["Is ", n_bad_iban(), " a valid IBAN? My banking app rejects it and I copied it from an invoice."],
        lambda: ["git bisect says ", sha1(), " is the first bad commit. How do I see which files it touched and revert just one of them?"],
        lambda: ["The download page lists sha256 ", sha256(), " for the installer of ", n_version(),
                 ". How do I verify it on macOS?"],
        lambda: ["Convert the unix timestamp ", epoch(), " to a human readable date in UTC and in Europe/Berlin."],
        lambda: ["Why do AWS access key IDs start with AKIA and temporary ones with ASIA? Our shipping team also asked what the ASIA region code in our ERP means."],
        lambda: ["I'm renaming the ", n_sk_word(), " component and the ", n_sk_word(),
                 " widget in our React app. Suggest consistent names and folder structure."],
        lambda: ["This image won't render in my email template: `", n_b64img(), "` — is the base64 truncated?"],
        lambda: ["GitHub Actions step fails with 'Resource not accessible by integration':\n```yaml\n- uses: actions/checkout@v4\n  with:\n    token: ${{ secrets.GITHUB_TOKEN }}\n```\nWhat permission am I missing?"],
        lambda: ["Helm template question:\n```yaml\nenv:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n        name: db-credentials\n        key: password\n```\nHow do I make the secret name configurable in values.yaml?"],
        lambda: ["A customer says their card ending in ", n_last4(), " was declined for order ", n_order16(),
                 " but the bank shows no attempt. What should our support agent ask next?"],
        lambda: ["Write an Excel formula that flags rows where the SKU (like ", n_sku(), ") is missing or the price (like ",
                 usd(), ") is zero."],
        lambda: ["Give me a BibTeX entry for the book with ISBN ", isbn13(), ", published ", str(R.randint(1995, 2024)), "."],
        lambda: ["docker pull keeps resolving to digest sha256:", sha256(), " even though I pushed a new tag ",
                 n_version(), ". Why?"],
        lambda: ["Onboarding checklist for employee ID ", n_9digit(), " starting ", d_human(),
                 ": laptop, badge, accounts. Can you turn this into a table?"],
        lambda: ["Our signup form shows the SSN field as XXX-XX-XXXX and we only store the last four digits. Write the validation message text for when the field is empty."],
        lambda: ["What's the difference between ", "v%d.%d.%d" % (R.randint(1, 3), R.randint(0, 9), R.randint(0, 9)),
                 " and ", "v%d.%d.%d" % (R.randint(1, 3), R.randint(10, 19), R.randint(0, 9)),
                 " in semantic versioning, and which one is newer?"],
        lambda: ["Parse this user agent and tell me the browser and OS: ", n_useragent()],
        lambda: ["Write a SQL query that returns orders created after '", d_iso(), "' with a total above ", usd(),
                 ", grouped by day."],
        lambda: ["Regex help: I want to match US phone numbers in the format (XXX) XXX-XXXX and reject anything else. Python please."],
        lambda: ["Explain how a JWT is structured (header.payload.signature) and what alg HS256 vs RS256 means. No need for examples."],
        lambda: ["Is it fine to keep this in config.yaml?\n```yaml\nservice:\n  api_key: <your-api-key>\n  password: ", n_pw_placeholder(),
                 "\n  timeout_seconds: 30\n```"],
        lambda: ["Terraform: I pass `password = var.db_password` to aws_db_instance. How do I mark the variable sensitive so it isn't printed in the plan?"],
        lambda: ["My laptop's Wi-Fi MAC is ", n_mac(), " and the router's DHCP list shows a different one. Why would the MAC be randomized?"],
        lambda: ["Meeting notes: sync with ", company(), " on ", d_human(), ". Action items: close ticket ", n_ticket(),
                 ", update the ", n_sk_word(), " board, send the budget of ", usd(), ". Please summarize in three bullets."],
        lambda: ["We ship to Asia and Europe. Write a short FAQ answer about customs fees for orders above ", eur(), "."],
        lambda: ["pandas question: my CSV has columns date, amount, reference where reference looks like ",
                 n_invoice(), ". How do I extract the year from the reference into a new column?"],
        lambda: ["Order ", n_order16(), " and order ", n_order16(), " were merged by mistake on ", d_us(),
                 ". How do I word an apology that explains the split shipment?"],
        lambda: ["The parcel tracking number ", n_tracking(), " hasn't updated since ", ts_log(), ". What does 'label created' usually mean?"],
        lambda: ["Our batch job logged epoch ", epoch(), " as start and ", epoch(), " as end. Write Python that prints the duration in hours."],
        lambda: ["Summarize the release notes for ", n_version(), ": fixed the task-list crash, improved disk-usage reporting, new password policy screen (no password is shown in logs anymore)."],
        lambda: ["How do I set `api_key = os.environ[\"OPENAI_API_KEY\"]` in a Jupyter notebook without it showing up in the saved output?"],
        lambda: ["In my Rust code `let token = std::env::var(\"SLACK_TOKEN\")?;` panics in tests. How do I mock environment variables?"],
        lambda: ["The customer wrote: \"my reference is ", n_invoice(), ", amount ", eur(), ", paid on ", d_eu(),
                 "\". Write a receipt confirmation."],
        lambda: (lambda o: ["I have a column of 16-digit numbers like ", o, " that Excel shows as ", o[:15] + "0",
                            ". How do I stop it rounding the last digit?"])(n_order16()),
        lambda: ["Kubernetes pod ", fake.uuid4()[:8], "-", rstr("bcdfghjklmnpqrstvwxz2456789", 5),
                 " restarted at ", ts_iso(), " with exit code 137. Is that an OOM kill?"],
        lambda: ["Which accounts does the password policy apply to? We require 14 characters and rotate every 90 days. Draft the policy paragraph."],
        lambda: ["The HR portal asks for a social security number but I'm a contractor from ", pick(["Canada", "Germany", "Brazil", "India"]),
                 ". What should I put there? Employee number is ", n_9digit(), "."],
        lambda: ["Fix the grammar: 'Me and ", person()[0], " was going to call the vendor tomorrow about the invoice ", n_invoice(), ".'"],
        lambda: ["Write a regex that matches ISO timestamps like ", ts_iso(), " and also dates like ", d_eu(), "."],
        lambda: ["Give me a bash one-liner to find the largest files under /var/log, our disk-usage alert fired at ", ts_log(), "."],
        lambda: ["Explain what this cron does: `", pick(["0 3 * * 1-5", "*/15 * * * *", "30 2 1 * *"]),
                 " /usr/local/bin/rotate-logs --keep 14`"],
        lambda: ["Write unit tests for a function that masks card numbers so only the last four digits (e.g. **** **** **** ",
                 n_last4(), ") are visible."],
        lambda: ["My Chrome is ", n_chrome(), " and the extension says it needs ", "%d.0" % R.randint(100, 130),
                 " or newer. Is mine new enough?"],
        lambda: ["Compare these two builds: ", n_version(), " (commit ", sha1()[:12], ") and ", n_version(),
                 " (commit ", sha1()[:12], "). Which changelog entries should I check?"],
        lambda: ["How do I rotate a leaked API key in general? Our runbook just says 'revoke token, issue new token, update secret store'. Make it more detailed."],
        lambda: ["What does this Postgres error mean: `password authentication failed for user \"app\"`? The password in my DSN comes from $PGPASSWORD."],
        lambda: ["Calculate the compound interest on ", usd(100000, 5000000), " at ", "%d.%d" % (R.randint(1, 7), R.randint(0, 9)),
                 "% per year over ", str(R.randint(3, 30)), " years, compounded monthly."],
        lambda: ["Explain this error: `", pick(["TimeoutError", "ConnectionResetError", "KeyError: 'customer'"]),
                 "` in job ", uuid(), " at ", ts_iso(), ". It only happens on the ", n_sk_word(), " queue."],
        lambda: ["I'm getting HTTP 429 at ", ts_iso(), " with Retry-After: ", str(R.randint(5, 120)),
                 ". How do I implement exponential backoff in Go?"],
        lambda: ["Write a commit message for ", sha1()[:7], " which fixes the ", n_sk_word(), " bug reported in ", n_ticket(), "."],
        lambda: ["Our bucket policy denies access for arn:aws:iam::", rdigits(12), ":role/deploy. What am I missing?"],
        lambda: ["Help me write a LinkedIn post announcing our ", n_version(), " release. Highlights: faster ",
                 n_sk_word(), " view, ", str(R.randint(20, 60)), "% smaller bundle."],
        lambda: ["The coordinates ", "%d.%04d, %d.%04d" % (R.randint(10, 60), R.randint(0, 9999), R.randint(1, 30), R.randint(0, 9999)),
                 " came from a photo's EXIF data. Which city is that roughly?"],
        lambda: ["Our VAT ID is DE", rdigits(9), " and the supplier's is FR", rdigits(11),
                 ". Do we need to charge VAT on an invoice of ", eur(), "?"],
        lambda: ["Explain the Luhn algorithm step by step using a made-up number like ", n_order16(),
                 " and show why it fails the check."],
        lambda: ["Why is `SELECT * FROM orders WHERE id = ", rdigits(10), "` slow when id has an index? Postgres ",
                 "%d.%d" % (R.randint(12, 17), R.randint(0, 9)), "."],
        lambda: ["Make a ", str(R.randint(4, 10)), "-week study plan for the AWS Solutions Architect exam starting ", d_human(), "."],
        lambda: ["Grafana shows p99 latency of ", "%d.%03d" % (R.randint(0, 4), R.randint(0, 999)), " s at ", ts_iso(),
                 " on the ", n_sk_word(), " service. What metrics should I correlate?"],
        lambda: ["Summarize this changelog:\n- fixed CVE-", str(R.randint(2022, 2025)), "-", str(R.randint(1000, 49999)),
                 " in the parser\n- bumped OpenSSL to 3.0.", str(R.randint(8, 15)), "\n- ", n_sk_word(), " no longer crashes"],
        lambda: ["Code review please:\n```ts\nconst apiKey = process.env.API_KEY ?? '';\nif (!apiKey) throw new Error('API key missing');\n```\nIs the empty-string default a bad idea?"],
        lambda: ["Our desk phone system drops calls after 30 minutes, vendor ticket ", n_ticket(),
                 ". Write an escalation email to the vendor."],
        lambda: ["Difference between IPv4 and IPv6 in two paragraphs, and how many addresses fit in a /", pick(["48", "56", "64"]), "?"],
        lambda: ["Give me a regex for IBAN validation that also accepts spaces every four characters, and explain the mod-97 check."],
        lambda: ["Base64-decode this for me: ", pick(["SGVsbG8gV29ybGQh", "dGFzay1saXN0IGRvbmU=", "T3JkZXIgc2hpcHBlZA=="]), "."],
        lambda: ["Windows Update fails with error 0x", "%08X" % R.randint(0x80070000, 0x8007FFFF), " on ", n_version(), ". Fixes?"],
        lambda: ["Plan a ", str(R.randint(3, 10)), "-day trip to ", pick(["Lisbon", "Kyoto", "Oslo", "Montréal", "Zürich", "Kraków"]),
                 " in ", pick(MONTHS), " with a budget of ", usd(80000, 600000), "."],
        lambda: ["Rewrite this for a customer: 'Your refund of ", usd(), " for order ", n_order16(),
                 " was processed on ", d_us(), " and should arrive in 5-10 business days.'"],
        lambda: ["Container ", sha256()[:12], " keeps restarting; `docker inspect` shows StartedAt ", ts_iso(),
                 " and OOMKilled false. Ideas?"],
        lambda: ["Write a haiku about ", pick(["password managers", "forgotten passwords", "two-factor codes", "expired tokens"]), "."],
        lambda: ["How should a mobile app store API keys? Right now we ship them inside the binary of ", n_version(), "."],
        lambda: ["Compare two quotes: ", company(), " offers ", usd(), " per month, ", company(), " offers ", eur(),
                 " per month. Which is cheaper at today's rate?"],
        lambda: ["Turn this into a table: ", n_sku(), " qty ", str(R.randint(1, 50)), " at ", usd(), "; ", n_sku(), " qty ",
                 str(R.randint(1, 50)), " at ", usd(), "; ", n_sku(), " qty ", str(R.randint(1, 50)), " at ", usd(), "."],
        lambda: ["Employee ", full(person()), " (ID ", n_9digit(), ") asked to change their direct deposit. What verification steps should payroll follow before updating bank details?"],
        lambda: ["Proofread: \"Dear ", full(person(0.4)), ", thank you for your order ", n_invoice(),
                 ". Your package ", n_tracking(), " left our warehouse on ", d_human(), ".\""],
    ]


# ---------------------------------------------------------------------------
# SINGLE-entity templates, by type
# ---------------------------------------------------------------------------

def single_templates():
    def t_email():
        p = person()
        return pick([
            lambda: ["Can you rewrite this out-of-office reply to sound more professional? \"I'm away until Monday, for anything urgent contact ",
                     EMAIL(), ".\""],
            lambda: ["Write a SQL query that finds the user with email = '", EMAIL(), "' and every order they placed after ", d_iso(), "."],
            lambda: ["Why does Gmail bounce my messages to ", EMAIL(), " with '550 5.1.1 user unknown'?"],
            lambda: ["Draft a follow-up to ", full(p), " (", EMAIL(p), ") about the proposal we sent on ", d_human(), "."],
            lambda: ["Please remove ", EMAIL(), " from our newsletter list and tell me what GDPR says we may keep."],
            lambda: ["Is this email address valid: ", Ent("EMAIL", email_plus()), "? Our signup form rejects the plus sign."],
            lambda: ["Reply to ", full(p), " who wrote from ", EMAIL(p), " asking for a refund on invoice ", n_invoice(), ". Be empathetic."],
        ])()

    def t_card():
        b = pick(BRANDS)
        return pick([
            lambda: ["My ", BRAND_NAME[b], " card ", CARD(b), " keeps getting declined online. What could be wrong?"],
            lambda: ["Write a dispute letter for a double charge of ", usd(), " on my card ", CARD(b), " from ", d_human(), "."],
            lambda: ["My Luhn function returns False for ", CARD(b, "plain"), " but the card works in shops:\n```python\ndef luhn(n):\n    return sum(int(d) for d in n) % 10 == 0\n```"],
            lambda: ["A customer read their card number over chat: ", CARD(b), ", exp ", "%02d/%02d" % (R.randint(1, 12), R.randint(26, 31)),
                     ". Write the refund note for order ", n_invoice(), "."],
            lambda: ["Please update my billing card to ", CARD(b), " and cancel the old one ending in ", n_last4(), "."],
            lambda: ["Charge on card ", CARD(b), " for ", usd(), " — the merchant says it was refunded on ", d_eu(), " but I don't see it."],
        ])()

    def t_ssn():
        p = person(0.1)
        return pick([
            lambda: ["My SSN is ", SSN(), ". Which IRS form do I use to request last year's tax transcript?"],
            lambda: ["Filling out a W-4 for ", full(p), ", SSN: ", SSN(), ", filing status single. Is anything missing?"],
            lambda: ["Does the social security number ", SSN(), " fit the format our HR system expects?"],
            lambda: ["Write a short note to the mortgage broker: my social security number is ", SSN(), " and I authorize the credit check."],
            lambda: ["New hire paperwork for ", full(p), " (start ", d_human(), ") lists SSN ", SSN(), ". What other documents do we need for the I-9?"],
        ])()

    def t_iban():
        return pick([
            lambda: ["Is ", IBAN(), " a valid IBAN? I need to pay my landlord ", eur(), " by Friday."],
            lambda: ["Write an email to accounting: please update ", company(), "'s bank details to IBAN ", IBAN(), " from next month."],
            lambda: ["Parse this bank export line in Python: `", d_iso(), ";", IBAN("compact"), ";-", eur()[1:], ";Miete März`"],
            lambda: ["Translate to German: Please transfer the deposit to my account, IBAN ", IBAN("spaced"), ", by the end of the month."],
            lambda: ["Our SEPA export failed for IBAN ", IBAN(), " with code AC01. What does that reason code mean?"],
        ])()

    def t_ip():
        return pick([
            lambda: ["Why can't I ping ", IP4(), " from my laptop? The router is on the same subnet."],
            lambda: ["Block this address in nginx: ", IP(), " — it keeps hammering /wp-login.php."],
            lambda: ["What does this fail2ban line mean? `", ts_log(), ",", str(R.randint(100, 999)), " fail2ban.actions [", str(R.randint(800, 9000)), "]: NOTICE [sshd] Ban ", IP4(), "`"],
            lambda: ["Write a ufw rule to allow SSH only from ", IP4(), "."],
            lambda: ["What kind of IPv6 address is ", IP6(), " and can it be reached from the internet?"],
            lambda: ["Add a pg_hba.conf line so Postgres accepts md5 logins from ", IP4(), "/32 only."],
            lambda: ["My server's public address is ", Ent("IP_ADDRESS", ipv4(public=True)) if R.random() < 0.7 else IP6(), " but the DNS A/AAAA record points somewhere else. How do I debug this?"],
        ])()

    def t_phone():
        p = person()
        return pick([
            lambda: ["Write a voicemail greeting that tells callers to call ", PHONE(), " for urgent issues."],
            lambda: ["Format this phone number in E.164 for our CRM: ", PHONE("us")],
            lambda: ["Add this to my email signature: ", full(p), ", Sales Manager, mobile ", PHONE(), "."],
            lambda: ["Draft a text to my landlord asking him to call me back at ", PHONE(), " about the heating."],
            lambda: ["Tel: ", PHONE("intl"), " — which country and city is this phone number from?"],
            lambda: ["The delivery driver asked for a phone number, I gave ", PHONE(), ". Can you write a note for the courier too?"],
        ])()

    def t_aws():
        return pick([
            lambda: ["I accidentally committed this key to a public repo: ", AWS(), ". What should I do right now?"],
            lambda: ["boto3 says InvalidClientTokenId for access key ", AWS(), " even though I just created it. Why?"],
            lambda: ["Is this ~/.aws/credentials file right?\n```\n[default]\naws_access_key_id = ", AWS(),
                     "\naws_secret_access_key = <redacted>\nregion = eu-central-1\n```"],
            lambda: ["CloudTrail shows accessKeyId ", AWS(), " calling ListBuckets at ", ts_iso(), ". How do I find which IAM user owns it?"],
        ])()

    def t_github():
        return pick([
            lambda: ["git push fails with 'Support for password authentication was removed'. I set the remote to https://",
                     GH(), "@github.com/acme/api.git — what's wrong?"],
            lambda: ["Is it OK to have export GITHUB_TOKEN=", GH(), " in my .bashrc?"],
            lambda: ["Our CI log printed `Authorization: token ", GH(), "`. How do I scrub it from old logs?"],
            lambda: ["gh auth status says my token ", GH(), " is missing the read:org scope. How do I add it?"],
        ])()

    def t_gitlab():
        return pick([
            lambda: ["This returns 401, why?\n```\ncurl --header \"PRIVATE-TOKEN: ", GL(), "\" https://gitlab.example.com/api/v4/projects\n```"],
            lambda: ["My .gitlab-ci.yml sets GITLAB_API_TOKEN: ", GL(), " in variables and the release job still gets 403."],
            lambda: ["How do I revoke the personal access token ", GL(), "? I pasted it in a public issue."],
        ])()

    def t_slack():
        return pick([
            lambda: ["My bot can't post to channels. SLACK_BOT_TOKEN=", SLACK(), " and scopes are chat:write and channels:read. Any idea?"],
            lambda: ["`WebClient(token=\"", SLACK(), "\").chat_postMessage(channel=\"#ops\", text=\"hi\")` returns not_in_channel. Fix?"],
            lambda: ["Is ", SLACK(), " a user token or a bot token, and which one should a slash command use?"],
        ])()

    def t_stripe():
        return pick([
            lambda: ["stripe.api_key = \"", STRIPE(), "\" — why do my test cards fail with this key?"],
            lambda: ["Our restricted key ", STRIPE(), " can't create refunds. Which permission do I need to enable?"],
            lambda: ["In Node I do `const stripe = require('stripe')('", STRIPE(), "');` and webhooks return 400. What's wrong?"],
        ])()

    def t_openai():
        return pick([
            lambda: ["client = OpenAI(api_key=\"", OPENAI(), "\") gives me 429 on the first request. Help?"],
            lambda: ["I ran `export OPENAI_API_KEY=", OPENAI(), "` and python still raises AuthenticationError. Why?"],
            lambda: ["Is this key format still valid or is it a legacy one? ", OPENAI()],
        ])()

    def t_anthropic():
        return pick([
            lambda: ["anthropic.Anthropic(api_key=\"", ANT(), "\") raises 401 authentication_error. What's wrong?"],
            lambda: ["Why does this fail?\n```\ncurl https://api.anthropic.com/v1/messages -H \"x-api-key: ", ANT(),
                     "\" -H \"anthropic-version: 2023-06-01\" -H \"content-type: application/json\"\n```"],
            lambda: ["I set ANTHROPIC_API_KEY=", ANT(), " in docker-compose but the container doesn't see it."],
        ])()

    def t_pem():
        return pick([
            lambda: ["ssh says 'invalid format' for this key, can you spot the problem?\n\n", PEM(), "\n"],
            lambda: ["How do I convert this to PKCS#8?\n```\n", PEM("RSA PRIVATE KEY"), "\n```"],
            lambda: ["openssl complains 'unable to load private key':\n", PEM(), "\nThanks!"],
        ])()

    def t_jwt():
        return pick([
            lambda: ["Decode this JWT and tell me when it expires: ", JWT()],
            lambda: ["Our API returns 401 for `Authorization: Bearer ", JWT(), "`. Is the alg wrong?"],
            lambda: ["localStorage has access_token=", JWT(), " — is storing it there safe?"],
            lambda: ["Why does jwt.verify throw 'invalid signature' for ", JWT(), " when I use the same secret as the issuer?"],
        ])()

    def t_secret():
        return pick([
            lambda: ["My docker-compose has POSTGRES_PASSWORD=", SECRET(secret_value()), " and the container exits with code 1. Why?"],
            lambda: ["Why does this YAML not parse?\n```yaml\ndatabase:\n  host: db.internal\n  user: app\n  password: \"",
                     SECRET(secret_value()), "\"\n```"],
            lambda: ["Django settings.py has `SECRET_KEY = '", SECRET(secret_value()), "'`. Is it OK to commit?"],
            lambda: ["Keycloak returns unauthorized_client for\n```json\n{\"client_id\": \"web-portal\", \"client_secret\": \"",
                     SECRET(secret_alnum()), "\", \"grant_type\": \"client_credentials\"}\n```"],
            lambda: ["Our vendor gave us api_key: \"", SECRET(secret_alnum()), "\" for the sandbox. Write a Python wrapper that reads it from an env var instead."],
            lambda: ["Terraform plan shows `secret_key = \"", SECRET(aws_secret()), "\"` in plain text. How do I hide it?"],
            lambda: ["Connection fails: `postgresql://app:", SECRET(secret_alnum(R.randint(16, 28))), "@db-primary:5432/orders`. Is the URL format right?"],
        ])()

    return {
        "EMAIL": t_email, "CREDIT_CARD": t_card, "US_SSN": t_ssn, "IBAN": t_iban,
        "IP_ADDRESS": t_ip, "PHONE": t_phone, "AWS_ACCESS_KEY": t_aws, "GITHUB_TOKEN": t_github,
        "GITLAB_TOKEN": t_gitlab, "SLACK_TOKEN": t_slack, "STRIPE_KEY": t_stripe,
        "OPENAI_KEY": t_openai, "ANTHROPIC_KEY": t_anthropic, "PRIVATE_KEY": t_pem,
        "JWT": t_jwt, "GENERIC_SECRET": t_secret,
    }


# ---------------------------------------------------------------------------
# MULTI-entity templates
# ---------------------------------------------------------------------------

def m_support_ticket():
    p = person()
    pron, obj = pick([("her", "her"), ("his", "him"), ("their", "them")])
    b = pick(BRANDS)
    return ["Customer ", full(p), " (", EMAIL(p), ") says ", pron, " ", BRAND_NAME[b], " card ", CARD(b),
            " was charged twice for order ", n_invoice(), " (", usd(), ") on ", d_human(), ".",
            maybe(0.6, [" Please call ", obj, " back at ", PHONE(), "."]),
            " Write a reply that apologizes and explains the refund timeline."]


def m_hr_note():
    p = person(0.15)
    return ["HR note: ", full(p), ", SSN ", SSN(), ", starts on ", d_human(), " as ", fake.job(), ". Personal email ",
            EMAIL(p), maybe(0.6, [", mobile ", PHONE("us")]),
            maybe(0.4, [". Payroll to IBAN ", IBAN()]),
            ". Please draft the welcome letter and list what we still need from them."]


def m_finance():
    c1, c2 = company(), company()
    return ["Please prepare a SEPA batch: pay ", c1, " ", eur(), " to IBAN ", IBAN(), " (ref ", n_invoice(), ") and ",
            c2, " ", eur(), " to IBAN ", IBAN(), " (ref ", n_invoice(), ").",
            maybe(0.6, [" Send the remittance advice to ", EMAIL(), "."]),
            " Output the pain.001 XML."]


def m_env_debug():
    return ["The app crashes on boot with 'missing config'. Here's my .env:\n```\n", env_file(2, 5),
            "```\nWhat's wrong?"]


def m_compose():
    pw = secret_value()
    return ["docker compose up fails, the api can't reach the db:\n```yaml\nservices:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: app\n      POSTGRES_PASSWORD: ",
            SECRET(pw), "\n  api:\n    build: .\n    environment:\n      DATABASE_URL: postgresql://app:", SECRET(pw),
            "@db:5432/app\n      STRIPE_SECRET_KEY: ", STRIPE(),
            maybe(0.5, ["\n      OPENAI_API_KEY: ", OPENAI()]),
            "\n      LOG_LEVEL: debug\n```"]


def m_log_excerpt():
    lines = []
    for _ in range(R.randint(3, 6)):
        kind = R.random()
        if kind < 0.35:
            lines.append([ts_iso(), " WARN auth: login failed for user=", EMAIL(), " ip=", IP(), " attempts=", str(R.randint(2, 9))])
        elif kind < 0.6:
            lines.append([ts_iso(), " INFO http: GET /api/v1/orders/", n_invoice(), " 200 ", str(R.randint(3, 400)), "ms client=", IP4()])
        elif kind < 0.8:
            lines.append([ts_iso(), " INFO worker: job ", uuid(), " finished in ", str(R.randint(1, 90)), "s"])
        else:
            lines.append([ts_iso(), " ERROR mailer: bounce from ", EMAIL(), " (550 mailbox unavailable)"])
    out = ["Can you explain what's happening in these logs?\n```\n"]
    for ln in lines:
        out += [ln, "\n"]
    out.append("```")
    return out


def m_nginx():
    out = ["Which of these clients look like a scraper?\n```\n"]
    for _ in range(R.randint(3, 5)):
        path = pick(["/", "/login", "/api/v2/search?q=shoes", "/wp-login.php", "/robots.txt", "/sitemap.xml", "/cart"])
        ua = pick([n_useragent(), "python-requests/2.31.0", "curl/8.4.0", "Googlebot/2.1 (+http://www.google.com/bot.html)"])
        out += [IP(), " - - [", ts_clf(), "] \"GET ", path, " HTTP/1.1\" ", pick(["200", "301", "403", "404", "429"]), " ",
                str(R.randint(200, 90000)), " \"-\" \"", ua, "\"\n"]
    out.append("```")
    return out


def m_curl():
    host = "api." + fake.domain_name()
    return ["Debug this curl, it returns 401:\n```\ncurl -X POST https://", host, "/v2/charges \\\n  -H \"Authorization: Bearer ", JWT(),
            "\" \\\n", maybe(0.5, ["  -H \"X-Api-Key: ", SECRET(secret_alnum()), "\" \\\n"]),
            "  -H \"Content-Type: application/json\" \\\n  -d '{\"amount\": ", str(R.randint(100, 99999)),
            ", \"currency\": \"usd\"}'\n```",
            maybe(0.5, ["\nThe server is at ", IP4(), " if that matters."])]


def m_python_keys():
    return ["Refactor this script so the keys aren't hardcoded:\n```python\nimport boto3\nfrom openai import OpenAI\n\ns3 = boto3.client(\n    \"s3\",\n    aws_access_key_id=\"",
            AWS(), "\",\n    aws_secret_access_key=\"", SECRET(aws_secret()), "\",\n)\nclient = OpenAI(api_key=\"", OPENAI(),
            "\")\n", maybe(0.4, ["NOTIFY = \"", EMAIL(), "\"\n"]), "```"]


def m_ai_clients():
    return ["Which of these SDK calls is failing? I'm switching providers.\n```python\nimport anthropic, openai\nclaude = anthropic.Anthropic(api_key=\"",
            ANT(), "\")\ngpt = openai.OpenAI(api_key=\"", OPENAI(), "\")\n```",
            maybe(0.4, ["\nAlso our Slack alert uses ", SLACK(), "."])]


def m_gha_leak():
    return ["Someone committed this workflow. How bad is it and what do we rotate first?\n```yaml\nenv:\n  GH_TOKEN: ",
            GH(), "\n  GITLAB_MIRROR_TOKEN: ", GL(), "\n  SLACK_WEBHOOK_TOKEN: ", SLACK(),
            "\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n```"]


def m_slack_app():
    return ["Slack app config for our on-call bot, why does the events endpoint reject requests?\n```json\n{\n  \"bot_token\": \"",
            SLACK(), "\",\n  \"signing_secret\": \"", SECRET(secret_alnum(32)), "\",\n  \"channel\": \"#incidents\"\n}\n```"]


def m_k8s_secret():
    return ["kubectl apply fails on this manifest:\n```yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: api-credentials\ntype: Opaque\nstringData:\n  DB_PASSWORD: \"",
            SECRET(secret_value()), "\"\n  STRIPE_KEY: \"", STRIPE(), "\"\n", maybe(0.5, ["  ADMIN_EMAIL: \"", EMAIL(), "\"\n"]), "```"]


def m_ssh_key():
    return ["I can't ssh into ", IP(), " as deploy. Permission denied (publickey). This is the key I'm using:\n\n",
            PEM(pick(["OPENSSH PRIVATE KEY", "RSA PRIVATE KEY"])), "\n\nThe server runs ", n_version(), "."]


def m_gcp_sa():
    proj = fake.word() + "-" + fake.word() + "-" + str(R.randint(100000, 999999))
    sa = "deployer@" + proj + ".iam.gserviceaccount.com"
    return ["Why does gcloud say 'invalid_grant' with this service account file?\n```json\n{\n  \"type\": \"service_account\",\n  \"project_id\": \"",
            proj, "\",\n  \"private_key_id\": \"", sha1(), "\",\n  \"private_key\": \"", PEM("PRIVATE KEY", "\\n"),
            "\\n\",\n  \"client_email\": \"", Ent("EMAIL", sa), "\"\n}\n```"]


def m_crm_csv():
    out = ["Clean up this contact list from our CRM (fix capitalization, dedupe, one line each):\n"]
    for _ in range(R.randint(2, 4)):
        p = person()
        out += ["- ", full(p).lower() if R.random() < 0.3 else full(p), " <", EMAIL(p), ">, ",
                pick(["mobile ", "phone: ", "tel ", "mobile: "]), PHONE(), ", ", company(), "\n"]
    return out


def m_fraud():
    out = ["Fraud review: these transactions came in within ", str(R.randint(2, 9)), " minutes. Summarize the risk.\n"]
    for i in range(R.randint(2, 4)):
        out += ["- ", ts_iso(), " card ", CARD(), " amount ", usd(), " from IP ", IP(), "\n"]
    return out


def m_landlord():
    p = person(0.35)
    return ["Please write a formal letter to my landlord ", full(person()), ". My name is ", full(p),
            ", the rent of ", eur(), " goes to IBAN ", IBAN(), " and he can call me on ", PHONE(), " or email ",
            EMAIL(p), ". I want the broken heating fixed before ", d_human(), "."]


def m_tax():
    b = person(0.1)
    return ["We're filing jointly. My SSN is ", SSN(), " and my spouse ", full(b), "'s social security number is ", SSN(),
            ". Our combined income is ", usd(5000000, 25000000), ". Which deductions should we look at first?"]


def m_git_remote():
    return ["My mirror script pushes to both remotes:\n```\ngit remote add gh https://", GH(), "@github.com/acme/site.git\ngit remote add gl https://oauth2:",
            GL(), "@gitlab.com/acme/site.git\n```\nHow can I stop the tokens appearing in `git remote -v`?"]


def m_stacktrace():
    return ["What's causing this?\n```\nTraceback (most recent call last):\n  File \"app/mailer.py\", line ", str(R.randint(10, 400)),
            ", in send\n    smtp.login(\"", EMAIL(), "\", PASSWORD)\nsmtplib.SMTPAuthenticationError: (535, b'5.7.8 Username and Password not accepted')\n```\nSMTP server is ",
            IP4(), ", port 587."]


def m_wire_support():
    p = person(0.3)
    return ["Support chat transcript:\n", full(p), ": hi, I sent ", eur(), " from IBAN ", IBAN(), " on ", d_eu(),
            " but it bounced\nAgent: can you confirm the email on the account?\n", full(p), ": ", EMAIL(p),
            maybe(0.6, [" and my phone is ", PHONE("intl")]), "\nPlease summarize the case for the back office."]


def m_terraform():
    return ["Is it a problem that this is in main.tf?\n```hcl\nprovider \"aws\" {\n  region     = \"us-east-1\"\n  access_key = \"",
            AWS(), "\"\n  secret_key = \"", SECRET(aws_secret()), "\"\n}\n\nresource \"aws_db_instance\" \"main\" {\n  username = \"admin\"\n  password = \"",
            SECRET(secret_value()), "\"\n}\n```"]


def m_jwt_session():
    e = email_for()
    return ["User ", Ent("EMAIL", e), " reports being logged out every few minutes. Their cookie is session=", JWT(e),
            "; Path=/; HttpOnly and the refresh request comes from ", IP(), ". Why would the token expire so fast?"]


def m_stripe_webhook():
    return ["Stripe webhook handler keeps failing signature checks:\n```python\nstripe.api_key = \"", STRIPE(),
            "\"\nendpoint_secret = \"", SECRET("whsec_" + secret_alnum(32)),
            "\"\n```\nCustomer email in the failing event was ", EMAIL(), "."]


def m_oauth_debug():
    e = email_for()
    return ["OIDC login loop. The callback gets\n```json\n{\"id_token\": \"", JWT(e), "\", \"token_type\": \"Bearer\", \"expires_in\": 3600}\n```\n",
            "and our client config is `client_secret: ", SECRET(secret_alnum()), "`. The user is ", Ent("EMAIL", e),
            ". Why would the nonce check fail?"]


def m_ai_gateway():
    return ["Here's the config for our internal LLM gateway, why does only the Claude route return 401?\n```yaml\nproviders:\n  anthropic:\n    api_key: ",
            ANT(), "\n    model: claude-sonnet\n  openai:\n    api_key: ", OPENAI(), "\n",
            maybe(0.5, ["cache:\n  redis_password: ", SECRET(secret_value()), "\n"]), "```"]


def m_incident():
    out = ["Draft the security incident summary. On ", d_human(), " a developer pasted these into a public gist:\n"]
    makers = [AWS, GH, GL, SLACK, STRIPE, OPENAI, ANT, JWT]
    R.shuffle(makers)
    for mk in makers[:R.randint(2, 4)]:
        out += ["- ", mk(), "\n"]
    out += ["The gist was viewed from ", IP(), " before we deleted it. List the rotation steps per credential."]
    return out


def m_deploy_notes():
    p = person()
    return ["Turn these deploy notes into a runbook:\n1. ssh deploy@", IP4(), " using the key below\n2. restart the worker\n3. if it fails call ",
            full(p), " on ", PHONE(), "\n\n", PEM(), "\n"]


def m_benefits():
    p, k = person(0.15), person(0.0)
    return ["Benefits enrollment for ", full(p), " (SSN ", SSN(), "), adding dependent ", k[0], " ", p[1],
            ", whose SSN is ", SSN(), ". Confirmation should go to ", EMAIL(p),
            ". Which plan covers dependents under 26?"]


def m_chargeback():
    p = person()
    b = pick(BRANDS)
    return ["Chargeback case ", n_ticket(), ": cardholder ", full(p), ", ", BRAND_NAME[b], " ", CARD(b), ", disputed ", usd(),
            " from ", d_eu(), ". The customer's contact phone is ", PHONE(), maybe(0.5, [" and email ", EMAIL(p)]),
            ". Merchant order ", n_order16(), ". Write the representment letter."]


MULTI = [m_benefits, m_chargeback, m_oauth_debug, m_ai_gateway, m_incident, m_deploy_notes, m_support_ticket, m_hr_note, m_finance, m_env_debug, m_compose, m_log_excerpt, m_nginx, m_curl,
         m_python_keys, m_ai_clients, m_gha_leak, m_slack_app, m_k8s_secret, m_ssh_key, m_gcp_sa, m_crm_csv,
         m_fraud, m_landlord, m_tax, m_git_remote, m_stacktrace, m_wire_support, m_terraform, m_jwt_session,
         m_stripe_webhook]


# Some templates are listed twice so that every type gets a reasonable number of samples.
MULTI_WEIGHTED = MULTI + [m_support_ticket, m_finance, m_chargeback, m_wire_support, m_fraud, m_hr_note,
                          m_landlord, m_benefits, m_git_remote, m_incident, m_terraform, m_python_keys,
                          m_curl, m_jwt_session, m_ssh_key, m_ai_gateway]


# ---------------------------------------------------------------------------
# Lint: value shapes, boundaries, and nothing entity-like left unlabelled
# ---------------------------------------------------------------------------

SHAPES = {
    "EMAIL": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "US_SSN": r"(?!666)(?!000)[0-8]\d{2}-(?!00)\d{2}-(?!0000)\d{4}",
    "AWS_ACCESS_KEY": r"AKIA[A-Z2-7]{16}",
    "GITHUB_TOKEN": r"gh[pos]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}",
    "GITLAB_TOKEN": r"glpat-[A-Za-z0-9_-]{20}",
    "SLACK_TOKEN": r"xox[bp]-\d{10,12}-\d{10,13}-[A-Za-z0-9]{24}",
    "STRIPE_KEY": r"[sr]k_live_[A-Za-z0-9]{24,99}",
    "OPENAI_KEY": r"sk-proj-[A-Za-z0-9_-]{100,150}|sk-[A-Za-z0-9]{48}",
    "ANTHROPIC_KEY": r"sk-ant-api03-[A-Za-z0-9_-]{93}AA",
    "PRIVATE_KEY": r"-----BEGIN ((?:RSA |EC |OPENSSH )?PRIVATE KEY)-----(\n|\\n)(?:[A-Za-z0-9+/=]{1,64}\2){5,10}-----END \1-----",
    "GENERIC_SECRET": r"[^\s\"'`]{12,40}",
    "PHONE": r"\+?[\d ()-]{7,20}",
}

CONTEXT_PHONE = re.compile(r"call|phone|tel|mobile", re.I)
ANY_PHONE_WORD = re.compile(r"call|phone|tel|mobile|cell|fax", re.I)
PLACEHOLDER = re.compile(r"""^(?:$|\x00|[$<*{\[]|x{4,}$|os\.|process\.env|var\.|env\(|getenv|std::env|secrets\.|Bearer$|\d{1,6}$|
                         db-credentials|password$|.*\.\.\.$)""", re.X)
IMG_TLDS = {"png", "jpg", "jpeg", "gif", "svg", "webp"}


def check_value(e):
    t, v = e["type"], e["value"]
    probs = []
    if t in SHAPES and not re.fullmatch(SHAPES[t], v):
        probs.append("shape")
    if t == "CREDIT_CARD":
        d = re.sub(r"[ -]", "", v)
        ok_fmt = re.fullmatch(r"\d{15,16}|\d{4}([ -])\d{6}\1\d{5}|\d{4}([ -])\d{4}\2\d{4}\2\d{4}", v)
        brand = (d[0] == "4" and len(d) == 16) or (51 <= int(d[:2]) <= 55 and len(d) == 16) or \
            (2221 <= int(d[:4]) <= 2720 and len(d) == 16) or (d[:2] in ("34", "37") and len(d) == 15) or \
            ((d[:4] == "6011" or d[:2] == "65") and len(d) == 16)
        if not (ok_fmt and brand and luhn_ok(d)):
            probs.append("card")
    if t == "IBAN":
        if not (iban_valid(v) and re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+|[A-Z0-9]{4}(?: [A-Z0-9]{4})*(?: [A-Z0-9]{1,3})?", v)):
            probs.append("iban")
    if t == "IP_ADDRESS":
        try:
            ipaddress.ip_address(v)
        except ValueError:
            probs.append("ip")
    if t == "JWT":
        parts = v.split(".")
        try:
            hdr = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
            json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            sig = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
            if len(parts) != 3 or not v.startswith("eyJ") or hdr["alg"] not in ("HS256", "RS256") \
                    or not 32 <= len(sig) <= 64 or "=" in v:
                probs.append("jwt")
        except Exception:
            probs.append("jwt")
    if t == "GENERIC_SECRET" and PLACEHOLDER.match(v):
        probs.append("secret-placeholder")
    return probs


def lint(text, ents):
    probs = []
    raw = text.encode("utf-8")
    last_end = -1
    for e in ents:
        if raw[e["start"]:e["end"]].decode("utf-8") != e["value"]:
            probs.append("offset")
        if e["start"] < last_end:
            probs.append("overlap")
        last_end = e["end"]
        probs += [e["type"] + ":" + p for p in check_value(e)]
        cs, ce = e["_cstart"], e["_cend"]
        before = text[cs - 1] if cs > 0 else " "
        after = text[ce] if ce < len(text) else " "
        if before.isalnum() or before == "_" or after.isalnum() or after == "_":
            probs.append(e["type"] + ":boundary")
        if e["type"] in ("CREDIT_CARD", "US_SSN", "IP_ADDRESS", "PHONE", "IBAN"):
            if text[ce:ce + 2] and re.match(r"[.:-]\d", text[ce:ce + 2]):
                probs.append(e["type"] + ":trailing-digit")
        if e["type"] == "PHONE" and not CONTEXT_PHONE.search(text[max(0, cs - 80):ce + 40]):
            probs.append("PHONE:no-context")
        if e["type"] == "US_SSN":
            sent = re.split(r"[.!?]\s|\n", text[:cs])[-1]
            if not re.search(r"ssn|social security", sent, re.I):
                probs.append("SSN:no-context")
    # Mask labelled spans and scan what is left.
    chars = list(text)
    for e in ents:
        for i in range(e["_cstart"], e["_cend"]):
            chars[i] = "\x00"
    m = "".join(chars)
    for mo in re.finditer(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.([A-Za-z]{2,})", m):
        if mo.group(1).lower() not in IMG_TLDS:
            probs.append("leak-email:" + mo.group(0))
    for mo in re.finditer(r"\d+(?:\.\d+){3,}", m):
        parts = mo.group(0).split(".")
        pre = m[max(0, mo.start() - 8):mo.start()]
        if len(parts) == 4 and all(int(x) <= 255 for x in parts):
            probs.append("leak-ipv4:" + mo.group(0))
        elif len(parts) > 4 or not (pre.endswith("v") or pre.endswith("version ") or pre.endswith("Chrome/")) \
                or not any(int(x) > 255 for x in parts):
            probs.append("ambiguous-dotted:" + mo.group(0))
    for mo in re.finditer(r"(?<![\w:])[0-9A-Fa-f:]{2,39}(?![\w:])", m):
        if mo.group(0).count(":") >= 2 and re.search(r"[0-9A-Fa-f]", mo.group(0)):
            try:
                ipaddress.IPv6Address(mo.group(0))
                probs.append("leak-ipv6:" + mo.group(0))
            except ValueError:
                pass
    for mo in re.finditer(r"\d(?:[ -]?\d)*", m):
        s = mo.group(0)
        d = re.sub(r"[ -]", "", s)
        if 13 <= len(d) <= 19 and luhn_ok(d):
            if s == d or d[0] in "3456" or d[:1] == "2":
                probs.append("leak-luhn:" + s)
    if re.search(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)", m):
        probs.append("leak-ssn-shape")
    for mo in re.finditer(r"(?<!\d)\d{9}(?!\d)", m):
        sent = re.split(r"[.!?]\s|\n", m[:mo.start()])[-1]
        if re.search(r"ssn|social security", sent, re.I):
            probs.append("leak-ssn-context")
    for mo in re.finditer(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", m):
        if iban_valid(mo.group(0)):
            probs.append("leak-iban:" + mo.group(0))
    for pat in [r"\(\d{3}\)\s?\d{3}-\d{4}", r"(?<!\d)\d{3}[-.]\d{3}[-.]\d{4}(?!\d)", r"\+\d[\d ()-]{7,}\d"]:
        for mo in re.finditer(pat, m):
            probs.append("leak-phone:" + mo.group(0))
    for mo in re.finditer(r"(?<!\d)\d{7,15}(?!\d)", m):
        if ANY_PHONE_WORD.search(m[max(0, mo.start() - 60):mo.end() + 30]):
            probs.append("digits-near-phone-word:" + mo.group(0))
    for pat in [r"AKIA[A-Z2-7]{16}", r"gh[pousr]_[A-Za-z0-9]{10,}", r"github_pat_", r"glpat-", r"xox[abprs]-",
                r"[sr]k_(?:live|test)_[A-Za-z0-9]", r"sk-[A-Za-z0-9_-]{16,}", r"eyJ", r"-----BEGIN"]:
        for mo in re.finditer(pat, m):
            probs.append("leak-token:" + mo.group(0))
    for mo in re.finditer(r"(?i)[\w-]*(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token)[\w-]*[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"',;)}\]`]*)", m):
        if not PLACEHOLDER.match(mo.group(1)):
            probs.append("leak-secret:" + mo.group(0))
    return probs


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

PREFIXES = ["Hi! ", "Quick question: ", "Hey! ", "Please help. ", "Morning! ", "Sorry to bother you. ",
            "Context: I'm new to this. ", "Hello. "]
SUFFIXES = [" Thanks!", " Keep it short.", " Answer in bullet points please.", " (asking for a colleague)",
            " Thank you so much.", " ASAP please.", "\n\nThanks in advance."]


def make(kind, arg, singles, negs, seen):
    for _ in range(500):
        if kind == "neg":
            parts = pick(negs)()
        elif kind == "single":
            parts = singles[arg]()
        else:
            parts = pick(MULTI_WEIGHTED)()
        if R.random() < 0.25:
            parts = [pick(PREFIXES), parts]
        if R.random() < 0.25:
            suffix = pick(SUFFIXES)
            body = build(parts)[0]
            if body.endswith("\n"):
                suffix = suffix.lstrip()
            elif body.endswith("```"):
                suffix = "\n" + suffix.lstrip()
            parts = [parts, suffix]
        text, ents = build(parts)
        n = len(ents)
        if (kind == "neg" and n != 0) or (kind == "single" and n != 1) or (kind == "multi" and n < 2):
            continue
        if text not in seen and not lint(text, ents):
            seen.add(text)
            return text, ents
    raise SystemExit("could not generate a clean %s prompt" % kind)


def main():
    singles = single_templates()
    negs = neg_templates()
    # 7 single-entity prompts per type; the remaining single slots (None) go to
    # whichever type has the fewest entities so far, which evens out the totals.
    fixed = 7 * len(TYPES)
    single_types = [TYPES[i % len(TYPES)] for i in range(fixed)] + [None] * (N_SINGLE - fixed)
    R.shuffle(single_types)
    plan = [("neg", None)] * N_NEGATIVE + [("multi", None)] * N_MULTI + [("single", t) for t in single_types]
    R.shuffle(plan)

    out = sys.stdout.buffer
    counts = collections.Counter()
    shape = collections.Counter()
    non_ascii = 0
    failures = 0
    seen = set()
    for i, (kind, arg) in enumerate(plan, 1):
        if kind == "single" and arg is None:
            arg = min(TYPES, key=lambda t: counts[t])
        text, ents = make(kind, arg, singles, negs, seen)
        failures += len(lint(text, ents))
        shape[kind] += 1
        if any(ord(c) > 127 for c in text):
            non_ascii += 1
        for e in ents:
            counts[e["type"]] += 1
        rec = {"id": i, "text": text,
               "entities": [{k: e[k] for k in ("type", "start", "end", "value")} for e in ents]}
        out.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))

    err = sys.stderr
    print("prompts: %d (no entity: %d, one entity: %d, several: %d); with non-ASCII text: %d"
          % (len(plan), shape["neg"], shape["single"], shape["multi"], non_ascii), file=err)
    print("entities: %d" % sum(counts.values()), file=err)
    for t in TYPES:
        print("  %-15s %4d" % (t, counts[t]), file=err)
    if failures:
        print("LINT FAILURES: %d" % failures, file=err)
        sys.exit(1)


if __name__ == "__main__":
    main()
