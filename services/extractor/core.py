"""Extractor core: a transcript in, a summary and a lead with its evidence out; and every
retry-or-give-up decision of the extractor, returned as a value (`shared.decisions`) for the
handler and the LLM backend to carry out. No I/O.

The offline backend: rules over the business's service catalogue, a gazetteer of real place
names in the call's language, and a few phrase lists (name, callback number, urgency, spam,
wrong number). Every field it fills carries the quoted words and their time in the recording.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.decisions import GiveUp, Retry, refused
from shared.events import Evidence, Lead, LeadKind
from shared.redaction.apply import redact_text
from shared.redaction.kinds import EntityKind
from shared.transcript import Transcript, Utterance

EXTRACTOR_NAME = "rules-v2"
HEBREW = "he"
# Hebrew writes the prepositions and conjunctions "in, from, to, and, the, that, as" as a
# prefix letter of the next word: "בתל אביב" is "in Tel Aviv".
HEBREW_PREFIXES = "ובלמהשכ"
HEBREW_LOCATION_PREFIXES = "במל"
HEBREW_LOCATION_WORDS = frozenset(("ליד", "באזור", "אזור", "בעיר", "גר", "גרה", "גרים"))
APOSTROPHES = "'\u2019"
_TOKEN = re.compile(rf"[^\W_]+(?:[{APOSTROPHES}][^\W_]+)*")


class BusinessProfile(BaseModel):
    """What one business sells and where: service → trigger phrases (any language), and the
    cities it serves (empty: anywhere)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    services: dict[str, list[str]]
    cities: list[str] = Field(default_factory=list)
    # How summaries name a service, per language: {"he": {"plumbing": "אינסטלציה"}}.
    service_names: dict[str, dict[str, str]] = Field(default_factory=dict)


DEFAULT_PROFILE = BusinessProfile(
    services={
        "plumbing": [
            "plumber", "plumbing", "leak", "leaking", "pipe", "pipes", "sink", "drain",
            "clogged", "toilet", "water heater", "אינסטלטור", "נזילה", "סתימה", "ביוב",
        ],
        "electrical": [
            "electrician", "electrical", "outlet", "outlets", "wiring", "breaker", "fuse box",
            "no power", "חשמלאי", "חשמל", "קצר",
        ],
        "locksmith": ["locksmith", "locked out", "lock", "keys", "מנעולן", "נעול", "מנעול"],
        "hvac": [
            "air conditioning", "air conditioner", "ac unit", "heating", "furnace", "hvac",
            "boiler", "מזגן", "מיזוג", "דוד",
        ],
        "cleaning": ["cleaning", "cleaner", "maid", "ניקיון"],
        "moving": ["moving", "movers", "relocation", "הובלה", "הובלות", "מובילים"],
    },
    service_names={
        "he": {
            "plumbing": "אינסטלציה", "electrical": "חשמלאי", "locksmith": "מנעולן",
            "hvac": "מיזוג אוויר", "cleaning": "ניקיון", "moving": "הובלה",
        },
    },
)  # fmt: skip


class CatalogueFile(BaseModel):
    """The extractor's configuration file: a default profile and one per business id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: BusinessProfile = DEFAULT_PROFILE
    businesses: dict[str, BusinessProfile] = Field(default_factory=dict)

    def profile(self, business_id: str) -> BusinessProfile:
        return self.businesses.get(business_id, self.default)


SPAM_PHRASES = (
    "car warranty", "extended warranty", "vehicle warranty", "you have been selected",
    "you've been selected", "you have won", "you've won", "press one", "press 1",
    "limited time offer", "free cruise", "lower your interest", "credit card debt",
    "recorded message", "business listing", "google listing", "google ranking",
    "הודעה מוקלטת", "זכית", "הצעה מיוחדת", "הלוואה",
)  # fmt: skip
WRONG_NUMBER_PHRASES = (
    "wrong number", "dialed the wrong", "dialled the wrong", "called the wrong",
    "must have misdialed", "didn't mean to call", "is this not the", "טעות במספר",
    "טעיתי במספר", "מספר שגוי",
)  # fmt: skip
URGENT_PHRASES = (
    "urgent", "urgently", "emergency", "asap", "as soon as possible", "right away",
    "right now", "immediately", "today", "tonight", "flooding", "flooded",
    "דחוף", "מיד", "חירום", "היום", "בהקדם",
)  # fmt: skip
NAME_PATTERNS = (
    (re.compile(r"\b(?:my name is|my name's|name's)\s+", re.IGNORECASE), 0.9),
    (re.compile(r"(?:קוראים לי|שמי)\s+"), 0.9),
    (re.compile(r"\b(?:this is|I'm|I am|it's)\s+", re.IGNORECASE), 0.6),
)
NOT_NAMES = frozenset((
    "a", "an", "the", "calling", "just", "looking", "here", "in", "at", "from", "with", "so",
    "not", "very", "really", "having", "trying", "wondering", "hoping", "sorry", "afraid",
    "good", "fine", "okay", "ok",
))  # fmt: skip
NAME_QUESTION = re.compile(
    r"(?:your name|who am i speaking|who's calling|who is calling|מה השם|איך קוראים לך)",
    re.IGNORECASE,
)
PHONE = re.compile(r"(?<![\d+])\+?\d[\d\s().-]{5,}\d(?!\d)")
DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
PHONE_CUES = re.compile(
    r"(?:call me|reach me|call back|callback|number|phone|cell|מספר|טלפון|נייד|תחזרו)",
    re.IGNORECASE,
)
LOCATION_CUES = frozenset(
    "in from at near to around outside live located based".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Place:
    name: str
    country: str
    population: int


@dataclass(frozen=True)
class Gazetteer:
    """Place names of one language (normalised) → the most populous place of that name."""

    language: str
    places: Mapping[str, Place]
    max_words: int

    def lookup(self, name: str) -> Place | None:
        return self.places.get(normalise(name))


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    return " ".join(_TOKEN.findall(text))


def _is_hebrew(text: str) -> bool:
    return any("\u05d0" <= char <= "\u05ea" for char in text)


def _is_ascii_title(text: str) -> bool:
    return text.isascii() and text[:1].isupper()


def build_gazetteer(records: Iterable[Mapping[str, Any]], language: str) -> Gazetteer:
    """From GeoNames city records (name, countrycode, population, alternatenames): in Hebrew
    the Hebrew-script alternate names, otherwise the official name and its shorter ASCII
    forms ("New York" for "New York City"). Names of three letters or fewer are left out:
    too many are words or abbreviations."""
    places: dict[str, Place] = {}
    for record in records:
        place = Place(record["name"], record["countrycode"], int(record["population"]))
        alternates: list[str] = record.get("alternatenames") or []
        if language == HEBREW:
            names = [a for a in alternates if _is_hebrew(a)]
        else:
            names = [place.name] + [
                a for a in alternates if _is_ascii_title(a) and place.name.startswith(a + " ")
            ]
        for name in names:
            key = normalise(name)
            if len(key) <= 3:
                continue
            known = places.get(key)
            if known is None or known.population < place.population:
                places[key] = place
    max_words = max((len(key.split()) for key in places), default=1)
    return Gazetteer(language, places, max_words)


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Span:
    """A stretch of one utterance's text."""

    utterance: Utterance
    start: int
    end: int

    def evidence(self, confidence: float) -> Evidence:
        begin, finish = time_of(self.utterance, self.start, self.end)
        return Evidence(
            confidence=round(min(max(confidence, 0.0), 1.0), 2),
            quote=self.utterance.text[self.start : self.end][:500],
            start=begin,
            end=finish,
            speaker=self.utterance.speaker,
        )


def time_of(utterance: Utterance, start: int, end: int) -> tuple[float, float]:
    """The time of characters start..end of an utterance: from its words' timestamps when
    the words make up its text (as the transcriber writes them), else interpolated."""
    joined = "".join(word.text for word in utterance.words)
    if utterance.words and joined.strip() == utterance.text:
        offset = len(joined) - len(joined.lstrip())
        position, times = -offset, []
        for word in utterance.words:
            word_start, position = position, position + len(word.text)
            if position > start and word_start < end and word.text.strip():
                times.append((word.start, word.end))
        if times:
            return round(times[0][0], 2), round(times[-1][1], 2)
    length = max(len(utterance.text), 1)
    duration = utterance.end - utterance.start
    return (
        round(utterance.start + duration * start / length, 2),
        round(utterance.start + duration * end / length, 2),
    )


def tokens(text: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def find_phrases(utterance: Utterance, phrases: Iterable[str], language: str) -> list[Span]:
    """Each phrase where it occurs as whole words, ignoring case; in Hebrew also behind a
    prefix letter ("בנזילה")."""
    prefix = f"[{HEBREW_PREFIXES}]{{0,2}}" if language == HEBREW else ""
    spans = []
    for phrase in phrases:
        pattern = rf"(?<!\w){prefix}{re.escape(phrase)}(?!\w)"
        for match in re.finditer(pattern, utterance.text, flags=re.IGNORECASE):
            spans.append(Span(utterance, match.start(), match.end()))
    return sorted(spans, key=lambda span: (span.utterance.start, span.start))


@dataclass
class Finding:
    value: str
    span: Span
    confidence: float


@dataclass
class CallFacts:
    """What the rules found, field by field."""

    service: Finding | None = None
    city: Finding | None = None
    caller_name: Finding | None = None
    callback_number: Finding | None = None
    urgent: Finding | None = None
    spam: Finding | None = None
    wrong_number: Finding | None = None
    served_cities: frozenset[str] = field(default_factory=frozenset)


def caller_turns(transcript: Transcript) -> list[Utterance]:
    """What the caller said; in a mono recording nobody is known to be the agent."""
    return [u for u in transcript.utterances if u.speaker != "agent"]


def find_service(transcript: Transcript, profile: BusinessProfile, language: str) -> Finding | None:
    """The service with the most mentions by the caller (the agent's words count less: they
    may only repeat or offer), earliest first on a tie."""
    best: tuple[float, float, Finding] | None = None
    for service, phrases in profile.services.items():
        caller = [s for u in caller_turns(transcript) for s in find_phrases(u, phrases, language)]
        agent = [
            s
            for u in transcript.utterances
            if u.speaker == "agent"
            for s in find_phrases(u, phrases, language)
        ]
        score = len(caller) + 0.5 * len(agent)
        if not score:
            continue
        first = caller[0] if caller else agent[0]
        confidence = min(0.95, 0.6 + 0.1 * (len(caller) - 1)) if caller else 0.45
        candidate = (score, -first.utterance.start, Finding(service, first, confidence))
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def find_city(
    transcript: Transcript,
    gazetteer: Gazetteer,
    served: frozenset[str],
    exclude: Sequence[Span] = (),
) -> Finding | None:
    """The most credible place named in the call. A served city always counts; another
    gazetteer place counts when written as a proper noun (capitalised, not just the first
    word of a sentence) or after "in / from / near …" (in Hebrew only after a ב/מ/ל prefix
    or a word such as "ליד")."""
    best: Finding | None = None
    for utterance in transcript.utterances:
        words = tokens(utterance.text)
        index = 0
        while index < len(words):
            found = _place_at(utterance, words, index, gazetteer, served, exclude)
            if found is None:
                index += 1
                continue
            finding, width = found
            if utterance.speaker == "agent":
                finding.confidence -= 0.1
            if best is None or finding.confidence > best.confidence:
                best = finding
            index += width
    return best


def _place_at(
    utterance: Utterance,
    words: Sequence[Token],
    index: int,
    gazetteer: Gazetteer,
    served: frozenset[str],
    exclude: Sequence[Span],
) -> tuple[Finding, int] | None:
    hebrew = gazetteer.language == HEBREW
    for width in range(min(gazetteer.max_words, len(words) - index), 0, -1):
        chunk = words[index : index + width]
        start, end = chunk[0].start, chunk[-1].end
        if any(s.utterance is utterance and s.start < end and start < s.end for s in exclude):
            continue
        text = utterance.text[start:end]
        candidates = [(text, False)]
        if hebrew:
            candidates += [
                (text[n:], True) for n in (1, 2) if text[:n].strip(HEBREW_PREFIXES) == ""
            ]
        for name, prefixed in candidates:
            place = gazetteer.lookup(name)
            if place is None:
                continue
            previous = words[index - 1].text.casefold() if index else ""
            if hebrew:  # no capitals to tell a name: "ציון" is Zion, and a school grade
                cue = prefixed and text[0] in HEBREW_LOCATION_PREFIXES
                cue = cue or previous in HEBREW_LOCATION_WORDS
                proper = False
            else:
                cue = previous in LOCATION_CUES
                sentence_start = index == 0 or utterance.text[:start].rstrip()[-1:] in ".?!"
                proper = all(w.text[0].isupper() for w in chunk) and not sentence_start
            is_served = place.name in served
            if not (is_served or cue or proper):
                continue
            confidence = (0.9 if is_served else 0.55) + (0.05 if is_served and cue else 0.0)
            if not is_served and cue:
                confidence += 0.2 if proper else 0.1
            span_start = start + (len(text) - len(name))
            return Finding(place.name, Span(utterance, span_start, end), confidence), width
    return None


def find_caller_name(transcript: Transcript) -> Finding | None:
    """ "My name is …", "this is …" from the caller, or a bare name in answer to the agent
    asking for it."""
    asked = False
    for utterance in transcript.utterances:
        if utterance.speaker == "agent":
            asked = bool(NAME_QUESTION.search(utterance.text))
            continue
        if asked:
            asked = False
            words = tokens(utterance.text)
            name = _name_words(words, hebrew=_is_hebrew(utterance.text))
            if name and len(name) == len(words):
                value = " ".join(t.text for t in name)
                return Finding(value, Span(utterance, name[0].start, name[-1].end), 0.7)
    for utterance in caller_turns(transcript):
        for pattern, confidence in NAME_PATTERNS:
            for match in pattern.finditer(utterance.text):
                rest = tokens(utterance.text[match.end() :])
                name = _name_words(rest, hebrew=_is_hebrew(match.group()))
                if not name:
                    continue
                end = match.end() + name[-1].end
                value = " ".join(t.text for t in name)
                return Finding(value, Span(utterance, match.start(), end), confidence)
    return None


def _name_words(rest: Sequence[Token], hebrew: bool) -> list[Token]:
    if hebrew:
        return list(rest[:1])
    name: list[Token] = []
    for token in rest[:2]:
        if not token.text[0].isupper() or token.text.casefold() in NOT_NAMES:
            break
        if name and token.start != name[-1].end + 1:
            break
        name.append(token)
    return name


def find_callback_number(transcript: Transcript) -> Finding | None:
    """A phone number the caller says, written in digits or spoken digit by digit."""
    for utterance in caller_turns(transcript):
        for span, number in _numbers(utterance):
            before = utterance.text[max(0, span.start - 40) : span.start]
            confidence = 0.85 if PHONE_CUES.search(before) else 0.6
            return Finding(number, span, confidence)
    return None


def _numbers(utterance: Utterance) -> list[tuple[Span, str]]:
    found = []
    for match in PHONE.finditer(utterance.text):
        digits = re.sub(r"\D", "", match.group())
        if 7 <= len(digits) <= 15:
            plus = "+" if match.group().startswith("+") else ""
            found.append((Span(utterance, match.start(), match.end()), plus + digits))
    run: list[Token] = []
    for token in [*tokens(utterance.text), None]:
        if token is not None and token.text.casefold() in DIGIT_WORDS:
            run.append(token)
            continue
        if len(run) >= 7:
            digits = "".join(DIGIT_WORDS[t.text.casefold()] for t in run)
            found.append((Span(utterance, run[0].start, run[-1].end), digits))
        run = []
    return sorted(found, key=lambda item: item[0].start)


def _first_phrase(
    transcript: Transcript, phrases: Sequence[str], language: str, confidence: float
) -> Finding | None:
    spans = [s for u in caller_turns(transcript) for s in find_phrases(u, phrases, language)]
    if not spans:
        return None
    return Finding(spans[0].utterance.text[spans[0].start : spans[0].end], spans[0], confidence)


def find_facts(transcript: Transcript, profile: BusinessProfile, gazetteer: Gazetteer) -> CallFacts:
    language = gazetteer.language
    served = frozenset(
        place.name if (place := gazetteer.lookup(city)) else city for city in profile.cities
    )
    caller_name = find_caller_name(transcript)
    return CallFacts(
        service=find_service(transcript, profile, language),
        city=find_city(transcript, gazetteer, served, [caller_name.span] if caller_name else []),
        caller_name=caller_name,
        callback_number=find_callback_number(transcript),
        urgent=_first_phrase(transcript, URGENT_PHRASES, language, 0.8),
        spam=_first_phrase(transcript, SPAM_PHRASES, language, 0.9),
        wrong_number=_first_phrase(transcript, WRONG_NUMBER_PHRASES, language, 0.9),
        served_cities=served,
    )


def decide(facts: CallFacts) -> Lead:
    """The lead: spam and wrong numbers first (a spammer may name a service), then a request
    for a service of the business, else not a lead."""
    # Whatever a spammer or a wrong number names, it asks for no service.
    service = None if facts.spam or facts.wrong_number else facts.service
    findings = {
        "service": service,
        "city": facts.city,
        "caller_name": facts.caller_name,
        "callback_number": facts.callback_number,
    }
    evidence = {
        name: finding.span.evidence(finding.confidence)
        for name, finding in findings.items()
        if finding
    }
    kind: LeadKind
    if facts.spam:
        kind, confidence = "spam", facts.spam.confidence
        evidence["kind"] = facts.spam.span.evidence(confidence)
    elif facts.wrong_number:
        kind, confidence = "wrong_number", facts.wrong_number.confidence
        evidence["kind"] = facts.wrong_number.span.evidence(confidence)
    elif service:
        kind = "lead"
        confidence = min(1.0, service.confidence + (0.05 if facts.city else 0.0))
    else:
        kind, confidence = "not_a_lead", 0.5
    urgency = None
    if kind == "lead":
        urgency = "urgent" if facts.urgent else "normal"
        if facts.urgent:
            evidence["urgency"] = facts.urgent.span.evidence(facts.urgent.confidence)
    city = facts.city.value if facts.city else None
    return Lead(
        service=service.value if service else None,
        city=city,
        confidence=round(confidence, 2),
        caller_name=facts.caller_name.value if facts.caller_name else None,
        callback_number=facts.callback_number.value if facts.callback_number else None,
        urgency=urgency,
        kind=kind,
        in_service_area=(city in facts.served_cities) if city and facts.served_cities else None,
        evidence=evidence,
    )


def extract(transcript: Transcript, profile: BusinessProfile, gazetteer: Gazetteer) -> Lead:
    return decide(find_facts(transcript, profile, gazetteer))


def has_words(transcript: Transcript) -> bool:
    return any(tokens(u.text) for u in transcript.utterances)


SUMMARY_PHRASES = {
    "en": {
        "spam": "Spam call", "wrong_number": "Wrong number.",
        "not_a_lead": "No service was requested.", "urgent": "Urgent: ",
        "request": "{service} request", "from": " from {name}", "in": " in {city}",
        "outside": " (outside the service area)", "call_back": "; call back on {number}",
    },
    HEBREW: {
        "spam": "שיחת ספאם", "wrong_number": "טעות במספר.",
        "not_a_lead": "לא התבקש שירות.", "urgent": "דחוף: ",
        "request": "בקשה ל{service}", "from": " מ{name}", "in": " ב{city}",
        "outside": " (מחוץ לאזור השירות)", "call_back": "; לחזור למספר {number}",
    },
}  # fmt: skip


def summarise(lead: Lead, language: str = "en", profile: BusinessProfile = DEFAULT_PROFILE) -> str:
    """A one-line summary in the call's language (English for languages without phrases),
    services by the business's name for them, places as the caller said them."""
    phrases = SUMMARY_PHRASES.get(language, SUMMARY_PHRASES["en"])
    service = profile.service_names.get(language, {}).get(lead.service or "", lead.service)
    if lead.kind == "spam":
        said = lead.evidence.get("kind")
        return phrases["spam"] + (f": {said.quote}" if said else ".")
    if lead.kind != "lead":
        return phrases["wrong_number" if lead.kind == "wrong_number" else "not_a_lead"]
    text = (phrases["urgent"] if lead.urgency == "urgent" else "") + phrases["request"].format(
        service=service
    )
    text = text[0].upper() + text[1:]
    if lead.caller_name:
        text += phrases["from"].format(name=lead.caller_name)
    if lead.city:
        city = lead.evidence["city"].quote if "city" in lead.evidence else lead.city
        text += phrases["in"].format(city=city)
        if lead.in_service_area is False:
            text += phrases["outside"]
    if lead.callback_number:
        text += phrases["call_back"].format(number=lead.callback_number)
    return text + "."


@dataclass(frozen=True)
class Extraction:
    """One backend's answer for one call, with what produced it."""

    summary: str
    lead: Lead
    extractor: str
    model: str | None = None
    prompt_version: str | None = None


def redacted(extraction: Extraction, kinds: frozenset[EntityKind]) -> Extraction:
    """The extraction with the personal data of `kinds` (and always cards and long numbers)
    replaced by markers in every text it carries: the summary, the lead's free-text fields
    and each quote. The transcript is redacted already; this catches what a backend puts
    together (digits said in separate turns, a model's own writing) and a transcript stored
    unredacted."""

    def clean(text: str) -> str:
        return redact_text(text, kinds)[0]

    def cleaned(text: str | None) -> str | None:
        return None if text is None else clean(text)

    lead = extraction.lead
    return replace(
        extraction,
        summary=clean(extraction.summary),
        lead=lead.model_copy(
            update={
                "city": cleaned(lead.city),
                "caller_name": cleaned(lead.caller_name),
                "callback_number": cleaned(lead.callback_number),
                "evidence": {
                    # A marker may be longer than what it stands for.
                    name: evidence.model_copy(update={"quote": clean(evidence.quote)[:500]})
                    for name, evidence in lead.evidence.items()
                },
            }
        ),
    )


def rules_extraction(
    transcript: Transcript, profile: BusinessProfile, gazetteer: Gazetteer
) -> Extraction:
    lead = extract(transcript, profile, gazetteer)
    return Extraction(summarise(lead, gazetteer.language, profile), lead, EXTRACTOR_NAME)


@dataclass(frozen=True)
class AskAgain:
    """The model's answer was not valid: ask it once more."""

    reason: str


def unhandled_event(event_type: str) -> GiveUp:
    return GiveUp(f"extractor cannot handle {event_type}")


def llm_failure(status_code: int | None, message: str) -> Retry | GiveUp:
    """What to do when the chat API gave no completion, its client's own retries spent:
    `status_code` is its answer's, None when no answer came (a timeout, a lost connection)."""
    if status_code is None:
        return Retry(f"LLM did not answer: {message}")
    if refused(status_code):
        return GiveUp(f"LLM request refused: {message}")
    return Retry(f"LLM request failed for now: {message}")


def invalid_answer(reason: str, attempt: int, attempts: int) -> AskAgain | GiveUp:
    """The `attempt`th answer of at most `attempts` was invalid for `reason`: nothing unchecked
    reaches the status table, so the last one fails the call with the reason."""
    if attempt < attempts:
        return AskAgain(reason)
    return GiveUp(f"LLM answer invalid after {attempt} tries: {reason}"[:2000])
