"""Finding the personal data callers read out (card, phone and ID numbers, IBANs, e-mail
addresses) in words as speech recognition writes them and in free text, and redacting it.
Pure: no I/O. One concern a module (import from the module itself):

- `kinds`: EntityKind, the spans found (word indices and times, or character offsets), the
  kinds always redacted.
- `spoken`: tokens, spoken digits (English and Hebrew) and the runs of digits said together.
- `checks`: the checks that name a run: Luhn, the Israeli ID check digit, IBAN mod-97,
  phone numbers by `phonenumbers`.
- `email`: written and spoken e-mail addresses.
- `detect`: the spans in a list of words or in a text.
- `apply`: redacting them.
"""
