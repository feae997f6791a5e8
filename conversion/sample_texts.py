"""Realistic support tickets and help-article snippets for the parity check.

Real text exercises what random ids do not: [CLS]/[SEP] placement, frequent
tokens, natural length spreads. The last few are long so that batches at the
model's max_length hold real tokens, the longest one truncated.
"""

from __future__ import annotations

SAMPLE_TEXTS: tuple[str, ...] = (
    "How do I reset my password?",
    "I can't log in to my account after changing my email address.",
    "The invoice for March shows the wrong VAT number, can you fix it?",
    "Where can I download my receipts?",
    "My two-factor authentication codes are not accepted anymore.",
    "How do I add page numbers to the footer of my document?",
    "The spreadsheet formula returns #VALUE! when a cell is empty.",
    "Can I export my chart as a PNG image?",
    "Printing a PDF cuts off the right margin of every page.",
    "How to change the default font for new documents",
    "Spell check ignores words in capital letters — how do I turn that off?",
    "We were charged twice for the annual plan.",
    "Please cancel my subscription at the end of the billing period.",
    "The mobile app crashes when I open the settings screen on Android 14.",
    "How do I invite a colleague to my workspace?",
    "Is there a keyboard shortcut to insert a table?",
    "Error 502 when uploading attachments larger than 10 MB",
    "How do I merge cells in a table without losing the text?",
    "Our SSO login with Okta stopped working this morning.",
    "Can I restore a file I deleted last week?",
    "The search bar does not find articles with accented characters like café.",
    "How do I set up automatic replies while I'm on vacation?",
    "Dark mode makes the chart labels unreadable.",
    "Why is my account locked after three failed attempts?",
    "Sorting by date puts 10/01 before 9/30, the column looks like text.",
    "I want to change the language of the interface to German.",
    "How do I create a table of contents from my headings?",
    "Hyperlinks in the exported PDF are not clickable.",
    "The macro security warning appears every time I open the file.",
    "How can I password-protect a spreadsheet so others can only read it?",
    "Footnotes restart numbering on every page, I need continuous numbers.",
    "Can I use my own template for all new presentations?",
    "Images jump to the next page when I type above them.",
    "How do I freeze the first row so it stays visible while scrolling?",
    "The API returns 401 Unauthorized although the token is new.",
    "Webhook deliveries are delayed by several minutes.",
    "Is my data stored in the EU?",
    "How do I delete my account and all my data (GDPR request)?",
    "Bulk import of 5,000 contacts from CSV fails at row 1,203.",
    "The date picker shows the week starting on Sunday; we need Monday.",
    "Notifications are sent twice to the same email address.",
    "How do I track changes made by reviewers?",
    "Comments disappear after saving as .docx",
    "Can I print only the selected cells?",
    "Conditional formatting does not apply to new rows.",
    "How do I add a border around a paragraph?",
    "The pivot table does not refresh when the source data changes.",
    "What does the error 'ORA-00942: table or view does not exist' mean in Base?",
    "How can I number equations in a formula document?",
    "The slide transition plays without sound on macOS.",
    "Columns in my newsletter layout are uneven — how do I balance them?",
    "Headers differ between odd and even pages, how do I make them the same?",
    "Bookmarks are lost when I copy text into another document.",
    "I need a refund for an order placed by mistake, order #A-19342.",
    "Hello, since the update yesterday the toolbar icons are tiny on my 4K screen, "
    "I tried changing the scaling in preferences but nothing happened. Thanks!",
    "When I open a CSV file exported from our CRM, all umlauts are shown as strange "
    "symbols like Ã¼ instead of ü. Which character set should I choose in the import dialog?",
    "Our team shares one spreadsheet on a network drive. Sometimes two people edit it at "
    "the same time and one of them gets a message that the file is locked, and later their "
    "changes are missing. Is there a way to let several people edit safely, or at least see "
    "who has the file open?",
    "To insert page numbers, choose Insert - Header and Footer - Footer - Default Page Style "
    "to enable the footer. Place the cursor in the footer and choose Insert - Field - Page "
    "Number. To show the total number of pages as well, type ' of ' after the page number "
    "field and choose Insert - Field - Page Count.",
    "A conditional style applies a paragraph style according to the context in which a "
    "paragraph appears: in a table, in a frame, in a section, in a footnote or a header. "
    "Select the context in the list, then the paragraph style to apply in that context, and "
    "click Apply. Changing the conditions later updates every paragraph that uses the style.",
    "I have been a customer for six years and this is the first time I have to write to "
    "support. Last Friday our payment failed because the card expired, I updated the card on "
    "Saturday, but the account is still marked as overdue and my whole team cannot access "
    "the shared projects. We have a client presentation on Monday morning, so I would really "
    "appreciate it if someone could look into this today. The account is registered under "
    "our finance address, not mine, in case you need to look it up.",
    "Data validation lets you restrict what can be typed into a cell: whole numbers within a "
    "range, dates after a given day, entries from a list, or text of a certain length. Select "
    "the cells, choose Data - Validity, pick the criteria on the Criteria tab, and optionally "
    "write an input help text and an error message that appears when someone enters an "
    "invalid value. Existing invalid entries are not changed, but Tools - Detective - Mark "
    "Invalid Data circles them so that you can correct them one by one.",
    "Steps to reproduce: 1) open the desktop app, 2) go to Settings > Integrations > Calendar, "
    "3) click Connect Google, 4) approve access in the browser window. Expected: the calendar "
    "shows as connected. Actual: the browser says 'You can close this window' but the app "
    "keeps spinning and after two minutes shows 'Connection timed out (code 408)'. This "
    "happens on Windows 11 and on macOS Sonoma, with and without VPN, app version 5.12.3.",
    "Master documents combine several text documents into one large document such as a book "
    "or a thesis, while each chapter stays a separate file that can be edited on its own. "
    "Indexes, tables of contents, bibliographies and cross-references span all sub-documents "
    "once the master document is updated. Styles are taken from the master document, so "
    "define all styles there first, and keep the sub-documents in the same folder so that the "
    "links do not break when the project is moved to another computer.",
    "Printing troubleshooting. If nothing prints, first check that the printer is switched on, "
    "connected and selected in File - Printer Settings, and that it has paper and toner. If only "
    "some pages print, look at the page range in the Print dialog and make sure it is not limited "
    "to the current page or a selection. If the right or bottom edge of the page is cut off, the "
    "page margins are smaller than the printable area of the printer: open Format - Page Style, "
    "go to the Page tab and increase the margins, or choose the paper format that matches the "
    "paper in the tray, because printing an A4 document on Letter paper cuts off the bottom lines. "
    "If colors print as gray, check whether Print in black is enabled in Tools - Options - Print, "
    "and whether the printer driver is set to grayscale. For documents with many images, printing "
    "can be slow; reduce the image resolution in Tools - Options - Print, or print to a PDF file "
    "first and print that file. When a document prints blank pages between chapters, the chapter "
    "heading style probably inserts a page break with an odd or even page style; switch off the "
    "option Print automatically inserted blank pages in the Print dialog. Finally, if the printer "
    "prints strange characters instead of text, the driver may be wrong: remove the printer in "
    "the system settings, install the driver from the manufacturer's website and add it again, "
    "then restart the application so that it reads the new printer list.",
)
