from runtime.agent.main import main

main()
