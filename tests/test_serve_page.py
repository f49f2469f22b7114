"""The web demo's page in a real headless browser: Debian's chromium and chromedriver.

Nothing downloads a browser: the test uses the installed `chromium` and `chromedriver`
and skips (with the reason) when they are missing, except under
`MULTIATTN_REQUIRE_BROWSER=1` (set by `.ci/run`), where a missing browser fails it.
Screenshots of both pages go to the test's temporary directory (`SERVE_SCREENSHOTS=DIR`
keeps them).
"""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

TEXT = "ninety seven"


def find_browser():
    """`(chromium, chromedriver)` paths, or the reason they cannot be used."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [
        name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        return (
            None,
            f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)",
        )
    return (chromium, driver), None


@pytest.fixture(scope="module")
def browser():
    paths, reason = find_browser()
    if paths is None:
        if os.environ.get("MULTIATTN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MULTIATTN_REQUIRE_BROWSER=1 and {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,1000")
    # The driver's path given: Selenium Manager (which would download one) never runs.
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda _: condition())


def screenshot_directory(tmp_path):
    directory = os.environ.get("SERVE_SCREENSHOTS") or str(tmp_path)
    os.makedirs(directory, exist_ok=True)
    return directory


def test_translation_page_shows_translation_alignment_and_hover(served, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, runs, _ = served
    browser.get(url + "?run=numbers")
    wait_for(browser, lambda: browser.find_element(By.ID, "translate-section").is_displayed())
    errors = browser.find_element(By.ID, "error")
    text_box = browser.find_element(By.ID, "source-text")
    text_box.send_keys(TEXT)
    beam = browser.find_element(By.ID, "translate-beam")
    beam.clear()
    beam.send_keys("2")
    browser.find_element(By.ID, "translate-button").click()
    translation = browser.find_element(By.ID, "translation")
    wait_for(browser, lambda: translation.is_displayed() and translation.text.strip())
    assert not errors.is_displayed()

    # What the API answers for the same text and beam (the page's request went first).
    answer = runs["numbers"].answer(TEXT, 2)
    assert translation.text == answer["translation"]
    cells = browser.find_elements(By.CSS_SELECTOR, "#alignment svg rect.cell")
    assert len(cells) == len(answer["target_tokens"]) * len(answer["source_tokens"])
    nbest = browser.find_elements(By.CSS_SELECTOR, "#translate-nbest li")
    assert len(nbest) == 2

    # Hovering a target word colours the source words by its attention (the largest: fully).
    target = browser.find_elements(By.CSS_SELECTOR, "#target-strip .token")[0]
    ActionChains(browser).move_to_element(target).perform()
    sources = browser.find_elements(By.CSS_SELECTOR, "#source-strip .token")
    backgrounds = [source.value_of_css_property("background-color") for source in sources]
    strongest = int(np.argmax(answer["attention"][0]))
    assert backgrounds[strongest] in ("rgb(255, 140, 0)", "rgba(255, 140, 0, 1)"), backgrounds
    assert "active" in target.get_attribute("class")
    # And the reverse: a source word marks the target words that attended to it.
    ActionChains(browser).move_to_element(sources[0]).perform()
    targets = browser.find_elements(By.CSS_SELECTOR, "#target-strip .token")
    assert any("rgba(255, 140, 0" in t.value_of_css_property("background-color") for t in targets)
    path = os.path.join(screenshot_directory(tmp_path), "serve_translate.png")
    assert browser.save_screenshot(path) and os.path.getsize(path) > 10_000


def test_caption_page_shows_caption_and_one_panel_per_word(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, runs, _ = served
    pixels = np.full((64, 64, 3), 128, "uint8")
    pixels[10:30, 34:54] = (30, 60, 220)
    image_path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(image_path)

    browser.get(url + "?run=scenes")
    wait_for(browser, lambda: browser.find_element(By.ID, "caption-section").is_displayed())
    beam = browser.find_element(By.ID, "caption-beam")
    beam.clear()
    beam.send_keys("2")
    browser.find_element(By.ID, "image-file").send_keys(str(image_path))
    caption = browser.find_element(By.ID, "caption")
    wait_for(browser, lambda: caption.is_displayed() and caption.text.strip())
    assert not browser.find_element(By.ID, "error").is_displayed()

    with open(image_path, "rb") as file:
        answer = runs["scenes"].answer(file, 2)
    assert caption.text == answer["caption"]
    panels = browser.find_elements(By.CSS_SELECTOR, "#panels .panel")
    soft = browser.find_elements(By.CSS_SELECTOR, "#panels .panel canvas.soft")
    hard = browser.find_elements(By.CSS_SELECTOR, "#panels .panel canvas.hard")  # a hard run
    assert len(panels) == len(soft) == len(hard) == len(answer["tokens"])
    words = [panel.find_element(By.CLASS_NAME, "word").text for panel in panels]
    assert words == answer["tokens"]
    # A panel draws the image under the attention: its pixels are not blank.
    drawn = browser.execute_script(
        "const c = document.querySelector('#panels canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] > 30) lit++;"
        "return lit;"
    )
    assert drawn > 100
    assert len(browser.find_elements(By.CSS_SELECTOR, "#caption-nbest li")) == 2
    path = os.path.join(screenshot_directory(tmp_path), "serve_caption.png")
    assert browser.save_screenshot(path) and os.path.getsize(path) > 10_000


def test_page_shows_an_api_error(served, browser):
    from selenium.webdriver.common.by import By

    url, _, config = served
    browser.get(url + "?run=numbers")
    wait_for(browser, lambda: browser.find_element(By.ID, "translate-section").is_displayed())
    too_long = "seven " * config.max_text_characters
    browser.execute_script("document.getElementById('source-text').value = arguments[0]", too_long)
    browser.find_element(By.ID, "translate-button").click()
    error = browser.find_element(By.ID, "error")
    wait_for(browser, lambda: error.is_displayed())
    assert "over the limit" in error.text
