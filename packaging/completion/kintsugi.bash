# bash completion for kintsugi: the command itself answers (System.CommandLine's [suggest] directive), so
# completion always matches the installed version's commands and options.
_kintsugi()
{
    local IFS=$'\n'
    local line="${COMP_LINE:0:COMP_POINT}"
    COMPREPLY=( $(kintsugi "[suggest:${#line}]" "$line" 2>/dev/null) )
    if [ ${#COMPREPLY[@]} -eq 0 ]; then
        COMPREPLY=( $(compgen -f -- "${COMP_WORDS[COMP_CWORD]}") )
    fi
}
complete -o default -F _kintsugi kintsugi
