# report.html end to end: a small real run and the micro suite's creation rows, report.py on it
# and on bad inputs made from it (failed cells, no micro data, a half-written results.jsonl, an
# empty run), compare.py, and the page opened in headless Chromium (skipped, 77, without one).
add_test(NAME report_html COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/report_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(report_html PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77)
