// `camfleet completion bash|zsh`: a completion script for the shell, made from
// commander's own tree of commands and options, so it never lags behind them.
//   bash: eval "$(camfleet completion bash)"      (e.g. in ~/.bashrc)
//   zsh:  camfleet completion zsh > "${fpath[1]}/_camfleet"   (or eval it after compinit)

import type { Command } from "commander";
import { EXIT_USAGE } from "../client.ts";

interface Node {
  /** Space-separated names from the top, "" for camfleet itself. */
  path: string;
  subcommands: Array<{ name: string; description: string }>;
  options: Array<{ flag: string; description: string }>;
}

/** Every command of the tree, depth first, with its visible subcommands and option flags. */
export function commandTree(root: Command): Node[] {
  const out: Node[] = [];
  const visit = (cmd: Command, path: string) => {
    const visible = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden);
    const options = cmd.options.flatMap((o) => [o.short, o.long].filter((f): f is string => f !== undefined).map((flag) => ({ flag, description: o.description })));
    options.push({ flag: "--help", description: "display help" });
    out.push({ path, subcommands: visible.map((c) => ({ name: c.name(), description: c.description() })), options });
    for (const c of visible) visit(c, path === "" ? c.name() : `${path} ${c.name()}`);
  };
  visit(root, "");
  return out;
}

/** A single-quoted shell word. */
const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
/** zsh _describe entries are name:description; a colon in the name must be escaped. */
const zshEntry = (name: string, description: string) => q(`${name.replaceAll(":", "\\:")}:${description.split("\n")[0]!.slice(0, 100)}`);

export function bashScript(root: Command): string {
  const tree = commandTree(root);
  const cases = tree
    .map((n) => `    ${q(n.path)}) subs=${q(n.subcommands.map((s) => s.name).join(" "))}; opts=${q(n.options.map((o) => o.flag).join(" "))} ;;`)
    .join("\n");
  return `# bash completion for camfleet (camfleet completion bash)
_camfleet_words() {
  case "$1" in
${cases}
    *) subs=""; opts="" ;;
  esac
}
_camfleet() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" cmdpath="" w i subs opts
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    _camfleet_words "$cmdpath"
    case " $subs " in *" $w "*) cmdpath="\${cmdpath:+$cmdpath }$w" ;; esac
  done
  _camfleet_words "$cmdpath"
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  fi
}
complete -o default -F _camfleet camfleet
`;
}

export function zshScript(root: Command): string {
  const tree = commandTree(root);
  const cases = tree
    .map(
      (n) =>
        `    ${q(n.path)})\n      subs=(${n.subcommands.map((s) => zshEntry(s.name, s.description)).join(" ")})\n      opts=(${n.options.map((o) => zshEntry(o.flag, o.description)).join(" ")}) ;;`,
    )
    .join("\n");
  return `#compdef camfleet
# zsh completion for camfleet (camfleet completion zsh)
_camfleet_words() {
  case "$1" in
${cases}
    *) subs=(); opts=() ;;
  esac
}
_camfleet() {
  # Not "path": in zsh that is the array tied to PATH.
  local cmdpath="" w i
  local -a subs opts names
  for ((i = 2; i < CURRENT; i++)); do
    w="\${words[i]}"
    _camfleet_words "$cmdpath"
    names=(\${subs%%:*})
    if (( \${names[(Ie)$w]} )); then cmdpath="\${cmdpath:+$cmdpath }$w"; fi
  done
  _camfleet_words "$cmdpath"
  if [[ "\${words[CURRENT]}" == -* ]]; then
    _describe -t options 'option' opts
  else
    _describe -t commands 'command' subs || _files
  fi
}
if [[ "\${funcstack[1]}" == _camfleet ]]; then
  _camfleet "$@"
else
  compdef _camfleet camfleet
fi
`;
}

export function completionCommand(program: Command): void {
  program
    .command("completion <shell>")
    .description("print a completion script for bash or zsh: eval \"$(camfleet completion bash)\" in ~/.bashrc, or camfleet completion zsh > \"${fpath[1]}/_camfleet\"")
    .action((shell: string) => {
      if (shell === "bash") process.stdout.write(bashScript(program));
      else if (shell === "zsh") process.stdout.write(zshScript(program));
      else {
        process.stderr.write(`camfleet: INVALID_ARGUMENT: completion: shell must be bash or zsh (got ${JSON.stringify(shell)})\n`);
        process.exit(EXIT_USAGE);
      }
    });
}
