"""Realistic support-ticket texts, deterministic: the `tickets` workload and the benchmarks.

They live in the load-test package because two consumers must measure the same texts:
`kbrec loadtest --workload tickets` (loadtest.sources) and the scenarios of bench/.

Each ticket is a workload `Query` (account, text). Two kinds, about 60 in all:

- HAND_WRITTEN: tickets as customers write them (greetings, context, typos of
  tone, a few long ones), 5 to 80 words, each addressed to the help center it is
  about (the LibreOffice module that is the "account").
- templated from the corpus's test-split index queries ("page styles, page
  numbering"), wrapped in a sentence a customer might write; the account is the
  target article's account.

The length mix matters for the benchmarks: batches are padded to their longest
member, so a few long tickets make whole batches slower, as in production.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from loadtest.workload import Query

# (account, text). Accounts are the 9 LibreOffice help modules of data/corpus.
HAND_WRITTEN: Final[tuple[tuple[str, str], ...]] = (
    ("writer", "How do I add page numbers?"),
    ("writer", "page numbers start at 3 instead of 1, how do I reset them"),
    (
        "writer",
        "Hi, I'm writing my thesis and the table of contents doesn't update when I change "
        "a heading. I have to delete and insert it again every time. Is there a way to make "
        "it refresh automatically?",
    ),
    ("writer", "Can't get rid of the blank page at the end of my document"),
    (
        "writer",
        "I need the first page of my letter without a header but all the other pages with "
        "the company logo in the header. How do I set that up?",
    ),
    ("writer", "track changes not showing who edited what"),
    (
        "writer",
        "Hello support team. Our legal department sends contracts back and forth and we "
        "use track changes and comments a lot. Since the last update, when I accept all "
        "changes, the comments stay in the margin and some deleted text still shows with "
        "strikethrough in the printed PDF. Could "
        "you tell me how to get a clean final version without comments and without the "
        "deleted text, ideally without going through every change by hand? Thanks, Maria",
    ),
    ("writer", "mail merge from a spreadsheet with addresses"),
    ("calc", "VLOOKUP returns #N/A even though the value is there"),
    ("calc", "how to freeze the top row so it stays visible when scrolling"),
    (
        "calc",
        "My pivot table does not pick up the new rows I added to the source data. I "
        "refreshed it but the totals are still the old ones.",
    ),
    ("calc", "Conditional formatting to color cells red when the date is overdue"),
    ("calc", "Sort data by two columns"),
    (
        "calc",
        "We import a CSV export from our bank every month. Dates like 03/04/2026 come in as "
        "text or get switched to April 3rd, and amounts with a comma as the decimal "
        "separator are treated as text so SUM gives zero. Which import options should we "
        "pick so that dates and numbers are recognised correctly, and can we save those "
        "settings so the whole team uses the same ones?",
    ),
    ("calc", "how do i print only a selected range of cells on one page"),
    ("calc", "protect sheet but allow some cells to be edited"),
    ("impress", "How do I make bullet points appear one at a time?"),
    (
        "impress",
        "The presenter console shows on the projector and the slides on my laptop. How do "
        "I swap the screens?",
    ),
    ("impress", "change the background of all slides at once"),
    (
        "impress",
        "I recorded narration for every slide but when I export the presentation the sound "
        "is missing. I need to send it to colleagues who will watch it on their own, with "
        "the slides advancing automatically in time with the audio. What is the right way "
        "to do this?",
    ),
    ("impress", "export slides with speaker notes to PDF"),
    ("base", "How to create a form to enter data into my table?"),
    (
        "base",
        "I want a query that shows all customers who ordered nothing in the last six "
        "months. How do I write the criteria for a date range?",
    ),
    ("base", "connect to an existing MySQL database"),
    ("math", "how to type a fraction with a big bracket around it"),
    ("math", "Formula numbering in my document is off, equations show wrong numbers"),
    ("math", "insert a matrix with three rows"),
    ("draw", "How do I connect two shapes with a line that stays attached?"),
    ("draw", "crop an image in Draw"),
    (
        "draw",
        "I drew a floor plan and need all the walls exactly to scale, one centimetre for "
        "one metre. Where do I set the drawing scale and snap to the grid?",
    ),
    ("chart", "How to add a second y axis to my chart"),
    ("chart", "chart legend is cut off"),
    (
        "chart",
        "The bar chart shows the months in the wrong order and the data labels overlap. "
        "How do I fix the order and move the labels above the bars?",
    ),
    ("basic", "How do I run a macro when the document opens?"),
    (
        "basic",
        "Our macro loops over all sheets and copies values to a summary sheet. It worked in "
        "the old version but now stops with 'Object variable not set' on the line that "
        "gets the cell range by name. What changed and how do I get a cell range by name "
        "in Basic?",
    ),
    ("basic", "msgbox with yes no buttons"),
    ("shared", "How do I change the default font for new documents?"),
    ("shared", "autocorrect keeps changing my words, how to turn it off"),
    (
        "shared",
        "I'm visually impaired and use a screen reader. Some dialogs are not read aloud and "
        "the icons are too small. Which accessibility settings and keyboard shortcuts can "
        "help me? I also want high contrast and larger toolbar icons everywhere, in every "
        "program, not just in one document, and I want the settings to survive updates.",
    ),
    ("shared", "Files open in read-only mode"),
    ("shared", "how to set a password on a file"),
    ("shared", "recover a document after a crash"),
)

# Index queries are terse ("sorting, lists"); these frame them as a customer would.
TEMPLATES: Final[tuple[str, ...]] = (
    "{text} in {product}, please help",
    "Hi, I need help with {text} in {product}.",
    "How does {text} work in {product}? I could not find it in the menus.",
    "Question about {text}: where do I find this in {product}? Thanks in advance.",
    "Hello, we are new to {product} and a colleague asked me about {text}. Is there a "
    "step by step guide for this? We tried the help but got lost.",
)

PRODUCT: Final[dict[str, str]] = {
    "writer": "Writer",
    "calc": "Calc",
    "impress": "Impress",
    "base": "Base",
    "math": "Math",
    "draw": "Draw",
    "chart": "charts",
    "basic": "Basic macros",
    "shared": "LibreOffice",
}

TEMPLATED_COUNT: Final = 20


def templated_tickets(queries_path: Path, count: int = TEMPLATED_COUNT) -> list[Query]:
    """`count` test-split queries, round-robin over accounts, each in a customer's sentence.

    Queries are sorted before picking, so the same corpus always gives the same tickets.
    """
    by_account: dict[str, list[str]] = {}
    with queries_path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["split"] == "test":
                by_account.setdefault(record["account_id"], []).append(record["text"])
    accounts = sorted(by_account)
    for texts in by_account.values():
        texts.sort()
    tickets: list[Query] = []
    for i in range(count):
        account = accounts[i % len(accounts)]
        texts = by_account[account]
        # A stride through the sorted list spreads picks over the alphabet (topics).
        text = texts[(i // len(accounts) * 37 + 11) % len(texts)]
        template = TEMPLATES[i % len(TEMPLATES)]
        product = PRODUCT.get(account, "LibreOffice")
        tickets.append(Query(account, template.format(text=text, product=product)))
    return tickets


def ticket_texts(queries_path: Path) -> list[Query]:
    """Hand-written and templated tickets interleaved, so any window mixes both kinds."""
    hand = [Query(account, text) for account, text in HAND_WRITTEN]
    templated = templated_tickets(queries_path)
    mixed: list[Query] = []
    for i in range(max(len(hand), len(templated))):
        mixed.extend(group[i] for group in (hand, templated) if i < len(group))
    return mixed
