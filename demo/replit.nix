# The demo project's environment, in the replit.nix style strata reads.
{ pkgs }: {
  deps = [
    pkgs.hello
    pkgs.cowsay
    pkgs.figlet
    pkgs.cfact     # a C program, compiled when the big disk was built
    pkgs.greet-world  /* links against pkgs.libgreet */
    pkgs.libgreet
  ];
}
