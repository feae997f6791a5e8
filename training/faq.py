"""Hand-written support questions, phrased as customers write them.

Index entries ("page styles, page numbering") are what the encoder is
fine-tuned on; these questions are not. Ranking them shows whether
fine-tuning kept what the pretrained encoder knows out of that domain. Each
question lists every article that answers it; a hit on any of them counts.
"""

from __future__ import annotations

from kbrec.records import Query

FAQ: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("writer", "How can I put page numbers at the bottom of every page?",
     ("guide-footer_pagenumber", "guide-pagenumbers", "02-08010000", "02-18030300")),
    ("writer", "I want an automatic list of chapters at the start of my report",
     ("guide-indices_toc", "01-04120200", "01-04120000")),
    ("writer", "Red squiggly lines under my words, how do I turn that off?",
     ("guide-auto_spellcheck", "guide-spellcheck_dialog")),
    ("writer", "send the same letter to 200 customers with their own names",
     ("01-mailmerge00", "01-01150000", "guide-form_letters_main")),
    ("writer", "how to add a note at the bottom of the page that refers to a word",
     ("01-04030000", "guide-footnote_usage", "01-05040600")),
    ("writer", "Put CONFIDENTIAL faintly behind the text on each page", ("01-watermark",)),
    ("calc", "How do I keep the top row visible when I scroll down?",
     ("01-07090000", "01-07090100", "guide-line_fix")),
    ("calc", "make cells turn red when the value is below zero",
     ("guide-cellstyle_conditional", "01-05120000", "guide-cellstyle_minusvalue")),
    ("calc", "summarize sales by region and month from a big table",
     ("guide-datapilot_createtable", "guide-datapilot", "01-12090000")),
    ("calc", "only show the rows where the customer is from Berlin",
     ("01-12040100", "guide-autofilter", "guide-filters", "01-12040000")),
    ("calc", "put my list in alphabetical order", ("01-12030000", "guide-database_sort")),
    ("calc", "the column is too narrow and shows ### instead of the number",
     ("guide-row_height", "01-05040200")),
    ("impress", "make the slides fade into each other",
     ("01-06040000", "guide-animated_slidechange")),
    ("impress", "see my notes on the laptop while the audience sees the slides",
     ("guide-presenter_console", "04-presenter")),
    ("impress", "same logo on every slide without copying it each time",
     ("guide-masterpage", "01-03150100")),
    ("impress", "add a footer with the date to all slides", ("guide-footer", "01-03152000")),
    ("shared", "save my document so people without the software can open it",
     ("01-ref_pdf_export", "02-07090000")),
    ("shared", "see what my colleague changed in the document",
     ("01-02230000", "01-02230200", "guide-redlining")),
    ("shared", "protect the file so nobody can open it without a password",
     ("01-password_dlg", "guide-protection", "guide-openpgp")),
    ("shared", "make a clickable link to a website",
     ("guide-hyperlink_insert", "01-05020400", "02-09070000")),
    ("base", "find all customers who ordered more than five times",
     ("querywizard00", "02010100", "querywizard03")),
    ("base", "a screen to type new records into my database table",
     ("04000000", "04030000")),
    ("basic", "automate a repetitive task with a script",
     ("shared-02-11100000", "shared-01-06130000")),
    ("math", "write a fraction with a numerator above a line",
     ("01-03090100", "01-03091501", "01-03090000")),
)  # fmt: skip


def faq_queries(known: set[tuple[str, str]]) -> list[Query]:
    """One Query per (question, answering article) that exists in the corpus."""
    return [
        Query(account, text, article, "test")
        for account, text, articles in FAQ
        for article in articles
        if (account, article) in known
    ]
