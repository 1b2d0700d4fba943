# bash completion for edgegate                            -*- shell-script -*-
# urfave/cli's script (autocomplete/bash_autocomplete): the words come
# from edgegate itself (--generate-bash-completion). With the package
# bash-completion it uses its _init_completion; without it (source <(edgegate
# completion bash) in a plain bash), the words as bash split them.

_edgegate_init_completion() {
  COMPREPLY=()
  words=("${COMP_WORDS[@]}")
  cword=$COMP_CWORD
  cur="${COMP_WORDS[COMP_CWORD]}"
}

_edgegate() {
  if [[ "${COMP_WORDS[0]}" != "source" ]]; then
    local cur opts words cword requestComp
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    if declare -F _init_completion >/dev/null 2>&1; then
      _init_completion -n "=:" || return
    else
      _edgegate_init_completion
    fi
    words=("${words[@]:0:$cword}")
    if [[ "$cur" == "-"* ]]; then
      requestComp="${words[*]} ${cur} --generate-bash-completion"
    else
      requestComp="${words[*]} --generate-bash-completion"
    fi
    opts=$(eval "${requestComp}" 2>/dev/null)
    COMPREPLY=($(compgen -W "${opts}" -- ${cur}))
    return 0
  fi
}

complete -o bashdefault -o default -o nospace -F _edgegate edgegate
