#!/bin/sh
# lxss's first-run setup for the Debian and Ubuntu it builds (their [oobe] command in
# /etc/wsl-distribution.conf). It runs once, as root, at the first interactive launch:
# it makes an account for the person who installed the distribution, named as they are on
# the host and with their uid when it is free, gives it sudo, and records its uid as
# [oobe] defaultUid so lxss makes it the default user. Exit status 0 means done; anything
# else leaves the setup pending for the next launch, as WSL does with a failed OOBE.
set -u

conf=/etc/wsl-distribution.conf
name=${LXSS_HOST_USER:-}
uid=${LXSS_HOST_UID:-}

valid_name() {
    printf '%s\n' "$1" | grep -Eqx '[a-z_][a-z0-9_-]{0,31}'
}

usable_name() {
    valid_name "$1" && ! getent passwd "$1" >/dev/null
}

if ! usable_name "$name"; then
    if [ ! -t 0 ]; then
        echo "lxss first run: the user name '$name' is taken or not valid here, and there is" >&2
        echo "no terminal to ask for another: run 'lxss -d ${WSL_DISTRO_NAME:-NAME}' from a terminal" >&2
        echo "to finish the setup (commands given with -- run as root until then)." >&2
        exit 1
    fi
    echo "Create a default user account for this distribution."
    while :; do
        printf 'Enter new UNIX username: '
        read -r name || exit 1
        if usable_name "$name"; then
            break
        fi
        echo "'$name' is taken or not a valid name (lower-case letters, digits, _ and -; at most 32)."
    done
fi

uid_option=""
case "$uid" in
    ''|*[!0-9]*) ;;
    0) ;;
    *) getent passwd "$uid" >/dev/null || uid_option="--uid $uid" ;;
esac

# shellcheck disable=SC2086 # uid_option is one option and its value, or nothing
useradd --create-home --shell /bin/bash --groups sudo $uid_option "$name" || exit 1
# Passwordless sudo: the account has no password (it is the host user's own distribution,
# as unlocked as their own files), so sudo could not ask for one.
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$name" > "/etc/sudoers.d/lxss-$name" &&
    chmod 0440 "/etc/sudoers.d/lxss-$name" || exit 1

created=$(id -u "$name") || exit 1
sed -i -e '/^[[:space:]]*defaultUid[[:space:]]*=/d' -e "s/^\[oobe\][[:space:]]*\$/[oobe]\ndefaultUid = $created/" "$conf" || exit 1
echo "Created user '$name' (uid $created), a member of group sudo; it is now the default user."
