"""Sentences, their headers and list titles (`extract.reading.sentences`)."""

from extract.reading.sentences import list_title, report_sentences

LIST = ("FINDINGS:\nLungs: Clear airways.\nTracked nodules:\n1. Left upper lobe, apicoposterior segment: solid, 6 mm.\n"
        "2. Right lower lobe: 4 mm (image 88).\n\nPleura: No effusion.\n")


def test_a_list_item_has_the_title_line_above_its_items():
    for words in ("solid, 6 mm", "Right lower lobe: 4 mm"):
        assert list_title(LIST, LIST.index(words)) == "Tracked nodules"
    assert list_title(LIST, LIST.index("Clear airways")) == ""  # no list item
    assert list_title(LIST, LIST.index("No effusion")) == ""
    long_intro = "Lungs: Several nodules are followed, and these are listed with their sizes today:\n- Lingula: 5 mm.\n"
    assert list_title(long_intro, long_intro.index("Lingula")) == ""  # a sentence, not a title


def test_a_history_header_goes_on_to_the_next_lines_until_a_blank_line_or_a_header():
    report = ("COMPARISON: CT of 5 months ago.\nThen, four liver lesions were present.\n\nThe spleen is normal.\n"
              "TECHNIQUE: Portal venous phase.\nFINDINGS:\nA 9 mm liver cyst.\n")
    headers = dict((sentence, header) for header, sentence in report_sentences(report))
    assert headers["Then, four liver lesions were present"] == "COMPARISON"
    assert headers["The spleen is normal"] == ""
    assert headers["A 9 mm liver cyst"] == "FINDINGS"
