# shellcheck shell=bash
# Source this file, then call `install_chromium_if_missing`: the console's browser test
# (tests/console_browser.rs) drives Debian's headless Chromium over WebDriver.

install_chromium_if_missing() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        return
    fi
    echo "Chromium or chromedriver is not installed: installing them from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
}
