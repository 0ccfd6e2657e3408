"""Shell completion for lxss (bash, zsh, fish), generated from the parser's own tables.

Run at build time (``python3 -m lxss.packaging DIR``), never by `lxss` itself. Every option the
parser knows (lxss.cli.parse: the launch options and the management actions) comes out of
those tables, so an option added there is completed without touching this file; what a value
*is* (a distribution, a file, one of a few choices) comes from parse.VALUE_KINDS.

The three scripts share one design: a table of words (options, the action each option starts,
the kind of each value), then a small function that walks the words typed so far the way the
parser does (leading options, then an action and its arguments, or the command) and offers
what fits the word under the cursor. What they offer for each kind:

- distribution: the caller's distributions, from ``lxss -l -q`` (the command being completed,
  so `wsl` asks itself);
- catalog: ``busybox`` and the catalog's names from ``lxss -l -o -q`` (bounded by `timeout`:
  a catalog may be remote);
- user: the users in the distribution named so far (``-d NAME`` or the positional of
  --manage; else the default one), read from its /etc/passwd by ``lxss -e cut``, which starts
  the distribution if it is stopped;
- host-user: the host's users; file and directory: the host's files;
- a tuple: those choices; anything else: nothing (free text such as a new name).
"""

from __future__ import annotations

from lxss.cli import parse

# Kinds the scripts know how to complete; a kind outside these (a new one in VALUE_KINDS)
# completes to nothing rather than to something wrong.
KINDS = ("distribution", "catalog", "user", "host-user", "file", "directory")
LAUNCH = "launch"  # the "action" of the words before any action (no action has this name)


def _kind_text(kind: str | tuple[str, ...]) -> str:
    """A kind as the scripts store it: a name of KINDS, or `=` and the choices."""
    if isinstance(kind, tuple):
        return "=" + " ".join(kind)
    return kind


def tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """What every script is made of, all words as the shells see them:

    - starts: option spelling -> the action it starts ("command" for --, -e and --exec);
    - options: action -> its options, blank-separated ("launch" for the launch options and
      the action spellings that may follow them); a valued option is followed by `:` here;
    - kinds: "action option" or "action index" -> the kind of that value (see _kind_text).
    """
    starts: dict[str, str] = {}
    options: dict[str, str] = {}
    kinds: dict[str, str] = {}
    launch_words = [f"{o}:" for o in parse.LAUNCH_VALUED] + list(parse.LAUNCH_FLAGS)
    launch_words += list(parse.COMMAND_STARTERS)
    for name, (spellings, _, flags, valued) in parse.actions().items():
        for spelling in spellings:
            starts[spelling] = name
            launch_words.append(spelling)
        options[name] = " ".join(sorted(flags) + sorted(f"{o}:" for o in valued))
    for option, kind in parse.LAUNCH_VALUED.items():
        kinds[f"{LAUNCH} {option}"] = _kind_text(kind)
    for starter in parse.COMMAND_STARTERS:
        starts[starter] = "command"
    options[LAUNCH] = " ".join(launch_words)
    for (action, where), value_kind in parse.VALUE_KINDS.items():
        kinds[f"{action} {where}"] = _kind_text(value_kind)
    return starts, options, kinds


def _quote(word: str) -> str:
    """Single-quoted for all three shells (no word in the tables holds a quote)."""
    if "'" in word:
        raise ValueError(f"a completion word holds a quote: {word!r}")
    return f"'{word}'"


def _assignments(table: dict[str, str], style: str) -> str:
    if style == "pairs":  # zsh and fish: key value key value ...
        return " ".join(f"{_quote(k)} {_quote(v)}" for k, v in table.items())
    return " ".join(f"[{_quote(k)}]={_quote(v)}" for k, v in table.items())


def bash_script(commands: tuple[str, ...] = ("lxss", "wsl")) -> str:
    starts, options, kinds = tables()
    return _BASH.format(
        starts=_assignments(starts, "bash"),
        options=_assignments(options, "bash"),
        kinds=_assignments(kinds, "bash"),
        commands=" ".join(commands),
    )


def zsh_script(commands: tuple[str, ...] = ("lxss", "wsl")) -> str:
    starts, options, kinds = tables()
    return _ZSH.format(
        starts=_assignments(starts, "pairs"),
        options=_assignments(options, "pairs"),
        kinds=_assignments(kinds, "pairs"),
        commands=" ".join(commands),
    )


def fish_script(commands: tuple[str, ...] = ("lxss", "wsl")) -> str:
    starts, options, kinds = tables()
    registrations = "\n".join(
        f"complete -c {command} -f -a '(__lxss_complete)'" for command in commands
    )
    return _FISH.format(
        starts=_assignments(starts, "pairs"),
        options=_assignments(options, "pairs"),
        kinds=_assignments(kinds, "pairs"),
        registrations=registrations,
    )


# The walk, in each shell. State: `action` ("launch" until one starts, "command" once the command
# has begun), `want` (the kind of value the next word is, after a valued option), `index`
# (positionals of the action so far), `distro` (the last -d value or --manage's positional).

_BASH = r"""# bash completion for lxss; generated from lxss.cli.parse by lxss.packaging.completion.
declare -gA _lxss_starts=({starts})
declare -gA _lxss_options=({options})
declare -gA _lxss_kinds=({kinds})

_lxss_offer() {{  # kind, current word, command, distribution
    local kind=$1 cur=$2 cmd=$3 distro=$4 words=""
    case $kind in
        "") return ;;
        =*) words=${{kind#=}} ;;
        distribution) words=$("$cmd" -l -q 2>/dev/null) ;;
        catalog) words="busybox $(timeout 5 "$cmd" -l -o -q 2>/dev/null)" ;;
        user) words=$("$cmd" ${{distro:+-d "$distro"}} -e cut -d: -f1 /etc/passwd 2>/dev/null) ;;
        host-user) mapfile -t COMPREPLY < <(compgen -u -- "$cur"); return ;;
        file | directory)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen "-${{kind:0:1}}" -- "$cur")
            return ;;
    esac
    local IFS=$' \t\n'
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}}

_lxss() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd=${{COMP_WORDS[0]}}
    local action=launch want="" index=0 distro="" i word option
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ -n $want ]]; then
            [[ $want == distribution ]] && distro=$word
            want=""
            continue
        fi
        [[ $action == command ]] && return 0
        if [[ $action == launch && -n ${{_lxss_starts[$word]}} ]]; then
            action=${{_lxss_starts[$word]}}
            continue
        fi
        if [[ $word == -* ]]; then
            for option in ${{_lxss_options[$action]}}; do
                if [[ $option == "$word:" ]]; then
                    want=${{_lxss_kinds["$action $word"]:-text}}
                fi
            done
            continue
        fi
        if [[ $action == launch ]]; then
            return 0  # the command has begun: its words are the distribution's business
        fi
        [[ $action == manage && $index == 0 ]] && distro=$word
        index=$((index + 1))
    done
    [[ $action == command ]] && return 0
    if [[ -n $want ]]; then
        _lxss_offer "$want" "$cur" "$cmd" "$distro"
        return 0
    fi
    if [[ $cur == -* || $action == launch ]]; then
        local words=${{_lxss_options[$action]//:/}}
        mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
        return 0
    fi
    _lxss_offer "${{_lxss_kinds["$action $index"]}}" "$cur" "$cmd" "$distro"
}}

complete -F _lxss {commands}
"""

_ZSH = r"""#compdef {commands}
# zsh completion for lxss; generated from lxss.cli.parse by lxss.packaging.completion.
typeset -gA _lxss_starts _lxss_options _lxss_kinds
_lxss_starts=({starts})
_lxss_options=({options})
_lxss_kinds=({kinds})

_lxss_offer() {{  # kind, command, distribution
    local kind=$1 cmd=$2 distro=$3
    case $kind in
        "") return 1 ;;
        =*) compadd -- ${{(s: :)kind#=}} ;;
        distribution) compadd -- ${{(f)"$($cmd -l -q 2>/dev/null)"}} ;;
        catalog) compadd -- busybox ${{(f)"$(timeout 5 $cmd -l -o -q 2>/dev/null)"}} ;;
        user)
            local -a chosen=(${{distro:+-d}} ${{distro:+$distro}})
            compadd -- ${{(f)"$($cmd $chosen -e cut -d: -f1 /etc/passwd 2>/dev/null)"}} ;;
        host-user) _users ;;
        file) _files ;;
        directory) _files -/ ;;
    esac
}}

_lxss() {{
    local cmd=${{words[1]}} action=launch want="" distro="" word option
    local -i index=0 i
    for ((i = 2; i < CURRENT; i++)); do
        word=${{words[i]}}
        if [[ -n $want ]]; then
            [[ $want == distribution ]] && distro=$word
            want=""
            continue
        fi
        [[ $action == command ]] && return 1
        if [[ $action == launch && -n ${{_lxss_starts[$word]}} ]]; then
            action=${{_lxss_starts[$word]}}
            continue
        fi
        if [[ $word == -* ]]; then
            for option in ${{(s: :)_lxss_options[$action]}}; do
                [[ $option == "$word:" ]] && want=${{_lxss_kinds[$action $word]:-text}}
            done
            continue
        fi
        [[ $action == launch ]] && return 1
        [[ $action == manage && $index == 0 ]] && distro=$word
        index+=1
    done
    [[ $action == command ]] && return 1
    if [[ -n $want ]]; then
        _lxss_offer "$want" "$cmd" "$distro"
        return
    fi
    if [[ ${{words[CURRENT]}} == -* || $action == launch ]]; then
        compadd -- ${{(s: :)${{_lxss_options[$action]//:/}}}}
        return
    fi
    _lxss_offer "${{_lxss_kinds[$action $index]}}" "$cmd" "$distro"
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _lxss "$@"
else
    compdef _lxss {commands}
fi
"""

_FISH = r"""# fish completion for lxss; generated from lxss.cli.parse by lxss.packaging.completion.
set -g __lxss_starts {starts}
set -g __lxss_options {options}
set -g __lxss_kinds {kinds}

function __lxss_lookup --argument-names table key
    set -l list $$table
    for i in (seq 1 2 (count $list))
        if test "$list[$i]" = "$key"
            echo $list[(math $i + 1)]
            return 0
        end
    end
    return 1
end

function __lxss_offer --argument-names kind cmd distro
    switch $kind
        case ''
            return
        case '=*'
            string split ' ' -- (string sub -s 2 -- $kind)
        case distribution
            $cmd -l -q 2>/dev/null
        case catalog
            echo busybox
            timeout 5 $cmd -l -o -q 2>/dev/null
        case user
            if test -n "$distro"
                $cmd -d $distro -e cut -d: -f1 /etc/passwd 2>/dev/null
            else
                $cmd -e cut -d: -f1 /etc/passwd 2>/dev/null
            end
        case host-user
            __fish_complete_users
        case file
            __fish_complete_path (commandline -ct)
        case directory
            __fish_complete_directories (commandline -ct)
    end
end

function __lxss_complete
    set -l words (commandline -opc)
    set -l cmd $words[1]
    set -l action launch
    set -l want ''
    set -l distro ''
    set -l index 0
    for word in $words[2..-1]
        if test -n "$want"
            test "$want" = distribution; and set distro $word
            set want ''
            continue
        end
        test "$action" = command; and return
        set -l started (__lxss_lookup __lxss_starts $word)
        if test "$action" = launch -a -n "$started"
            set action $started
            continue
        end
        if string match -q -- '-*' $word
            set -l own (__lxss_lookup __lxss_options "$action")
            if contains -- "$word:" (string split ' ' -- $own)
                set want (__lxss_lookup __lxss_kinds "$action $word"; or echo text)
            end
            continue
        end
        test "$action" = launch; and return
        test "$action" = manage -a $index -eq 0; and set distro $word
        set index (math $index + 1)
    end
    test "$action" = command; and return
    if test -n "$want"
        __lxss_offer $want $cmd "$distro"
        return
    end
    if string match -q -- '-*' (commandline -ct); or test "$action" = launch
        string split ' ' -- (string replace -a ':' '' -- (__lxss_lookup __lxss_options "$action"))
        return
    end
    __lxss_offer (__lxss_lookup __lxss_kinds "$action $index") $cmd "$distro"
end

{registrations}
"""
